"""The model registry: register trial encoders and detectors as versions, read them back.

MLflow 3 has no stages: the serving encoder is the version behind the ``champion`` alias
(``models:/<name>@champion``), and the facts needed to judge it live in version tags,
typed by :class:`RegistryTags` (written by the sweep winner and `asd detector add-machine`,
read by :mod:`asd.serve.promotion`, which moves the alias).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from asd.config import Config
from asd.errors import AsdError, one_line
from asd.model.encoder import Encoder, load_encoder
from asd.tracking import ENCODER_FILE, check_tracking, is_unavailable
from asd.tracking.uri import is_http

METRIC = "metric"
"""Version tag: which score ``metric_value`` is (one of :data:`METRICS`)."""
METRIC_VALUE = "metric_value"
"""Version tag: the version's score, a number."""
REFERENCE_METRIC_VALUE = "reference_metric_value"
"""Version tag: the stronger untrained reference's score on the same machines and scorer."""
DATA_FINGERPRINT = "data_fingerprint"
"""Version tag: the data (and machine groups) the score was measured on."""
ESTIMATOR = "estimator"
"""Version tag: the scorer the score was measured with."""
HOLDOUT_HMEAN = "holdout.hmean"
"""Metric: hmean on machine types the search never saw (what a sweep with a holdout reports)."""
TUNE_HMEAN = "tune.hmean"
"""Metric: hmean on the machine types the search was tuned on (no holdout)."""
COMPARABLE_BY = (METRIC, DATA_FINGERPRINT, ESTIMATOR)
"""Version tags that must match for two versions' metric values to be compared."""
BOOKKEEPING_PREFIX = "asd."
"""Version tags under this prefix are the registry's own (promotion claims), not facts."""
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
"""Logged-model tag listing the registered versions made from it (shown on its UI page)."""
_GLOBAL_URI = threading.Lock()
"""Held while the process-wide tracking URI is borrowed (see :func:`_resolving_in`)."""


@dataclasses.dataclass(frozen=True)
class RegistryTags:
    """What a registered version claims about itself: the facts promotion compares.

    The one place the tag keys are spelled: writers build this, readers parse it with
    :meth:`from_tags`, so a typo is an error instead of a silently incomparable version.
    """

    metric: str
    """Which score ``metric_value`` is, e.g. :data:`HOLDOUT_HMEAN`."""
    metric_value: float
    """The version's score (higher is better)."""
    estimator: str
    """The scorer it was measured with (two versions compare only on the same one)."""
    data_fingerprint: str
    """The data it was measured on (two versions compare only on the same data)."""
    reference_metric_value: float | None = None
    """The untrained reference's score on the same data and scorer, if measured."""
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Descriptive tags (``sweep_id``, ``trial_id``, ``family``, ``parent_version`` ...)."""

    def to_tags(self) -> dict[str, str]:
        """The MLflow version tags (strings), the typed fields over any same-named extra."""
        tags = {
            **self.extra,
            METRIC: self.metric,
            METRIC_VALUE: f"{self.metric_value:.6f}",
            ESTIMATOR: self.estimator,
            DATA_FINGERPRINT: self.data_fingerprint,
        }
        if self.reference_metric_value is not None:
            tags[REFERENCE_METRIC_VALUE] = f"{self.reference_metric_value:.6f}"
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> RegistryTags:
        """Parse a version's tags; AsdError in one line naming a missing or bad tag.

        Bookkeeping tags (:data:`BOOKKEEPING_PREFIX`) are left out: a copy of a version's tags
        must not carry its promotion claims.
        """
        missing = [k for k in (*COMPARABLE_BY, METRIC_VALUE) if k not in tags]
        if missing:
            raise AsdError(f"tags lack {', '.join(missing)}")
        typed = (*COMPARABLE_BY, METRIC_VALUE, REFERENCE_METRIC_VALUE)
        return cls(
            metric=str(tags[METRIC]),
            metric_value=_number(tags, METRIC_VALUE),
            estimator=str(tags[ESTIMATOR]),
            data_fingerprint=str(tags[DATA_FINGERPRINT]),
            reference_metric_value=(
                _number(tags, REFERENCE_METRIC_VALUE) if REFERENCE_METRIC_VALUE in tags else None
            ),
            extra={
                k: str(v)
                for k, v in tags.items()
                if k not in typed and not k.startswith(BOOKKEEPING_PREFIX)
            },
        )

    def differs_from(self, other: RegistryTags) -> str:
        """The first of :data:`COMPARABLE_BY` in which the two differ, or '' (comparable)."""
        return next((k for k in COMPARABLE_BY if getattr(self, k) != getattr(other, k)), "")


def _number(tags: Mapping[str, str], key: str) -> float:
    try:
        value = float(tags[key])
    except (TypeError, ValueError):
        raise AsdError(f"tag {key} must be a number, got {tags[key]!r}") from None
    if value != value:  # NaN would compare false with everything and never lose
        raise AsdError(f"tag {key} must be a number, got {tags[key]!r}")
    return value


def client_for(tracking_uri: str) -> mlflow.MlflowClient:
    """A client on ``tracking_uri`` for both tracking and the registry (checked first)."""
    check_tracking(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def config_hash(flat: dict[str, Any]) -> str:
    """A short hash of a flat config (``Config.to_flat()``), for the ``config_hash`` tag."""
    blob = repr(sorted((k, repr(v)) for k, v in flat.items())).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------- register


def register_encoder(
    tracking_uri: str,
    model_uri: str,
    name: str,
    tags: RegistryTags,
    description: str | None = None,
) -> str:
    """Register a logged encoder (``models:/<model_id>`` from Tracker.log_encoder) as a version.

    ``tags`` become the version's tags (what promotion compares); ``description`` is the
    version's Markdown description in the UI. Returns the version.
    """
    if model_uri.startswith("models:/pending-"):
        raise AsdError(f"{model_uri} is still in the tracking journal: run sync_journal first")
    client = client_for(tracking_uri)
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if "already exists" not in str(err).lower() and err.error_code not in (
                "RESOURCE_ALREADY_EXISTS",
                "ALREADY_EXISTS",
            ):
                raise
        run_id = model_id = None
        match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
        if match:
            model_id = match.group(1)
            run_id = client.get_logged_model(model_id).source_run_id
        elif model_uri.startswith("runs:/"):
            run_id = model_uri[len("runs:/") :].split("/", 1)[0]
        # Source models:/<model_id>: the UI links such a version to its logged model.
        with _resolving_in(tracking_uri):
            version = client.create_model_version(
                name,
                source=model_uri,
                run_id=run_id,
                tags=tags.to_tags(),
                model_id=model_id,
                description=description,
            )
        if model_id is not None:
            _link_version(client, model_id, name, str(version.version))
    except MlflowException as err:
        raise AsdError(f"cannot register {model_uri} as {name}: {one_line(err)}") from err
    return str(version.version)


@contextlib.contextmanager
def _resolving_in(tracking_uri: str) -> Iterator[None]:
    """The process-wide tracking URI set to ``tracking_uri`` while a version is created.

    MLflow's SQL registry resolves a ``models:/<model_id>`` source with a default
    ``MlflowClient()`` (the global URI), not the store it writes to; a server resolves it in
    its own store, so an http URI needs nothing.
    """
    if is_http(tracking_uri):
        yield
        return
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _GLOBAL_URI:
        previous, env = tracking_utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None: unset again
            if env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env


def _link_version(client: mlflow.MlflowClient, model_id: str, name: str, version: str) -> None:
    """List the version in its logged model's ``mlflow.modelVersions`` tag.

    MLflow's own ``register_model`` does so; the logged model's page then shows the version.
    """
    logged = client.get_logged_model(model_id)
    listed = json.loads(logged.tags.get(MODEL_VERSIONS_TAG, "[]"))
    entry = {"name": name, "version": version}
    if entry not in listed:
        client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps([*listed, entry])})


def describe_model(tracking_uri: str, name: str, description: str) -> None:
    """Set the registered model's Markdown description (what the UI shows on its page)."""
    try:
        client_for(tracking_uri).update_registered_model(name, description=description)
    except MlflowException as err:
        raise AsdError(f"cannot describe model {name}: {one_line(err)}") from err


# --------------------------------------------------------------------------- read


def champion(tracking_uri: str, name: str, alias: str = "champion") -> ModelVersion | None:
    """The version behind ``alias`` (``None`` when the model or the alias does not exist)."""
    return alias_holder(client_for(tracking_uri), name, alias)


def alias_holder(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind ``alias``, ``None`` if none; AsdError when the store is down."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if is_unavailable(err):
            raise AsdError(f"cannot read alias {alias} of {name}: {one_line(err)}") from err
        return None


def download_champion(
    tracking_uri: str, name: str, dst: Path | str, alias: str = "champion"
) -> Path:
    """Download the champion's plain encoder file (``models:/<name>@<alias>``) into ``dst``."""
    client = client_for(tracking_uri)
    holder = alias_holder(client, name, alias)
    if holder is None:
        raise AsdError(f"model {name} has no version with alias '{alias}' at {tracking_uri}")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        # Resolve models:/<name>@<alias> with our client: MLflow's own models:/ resolver
        # reads the global registry URI, not the one passed to download_artifacts.
        root = client.get_model_version_download_uri(name, holder.version).rstrip("/")
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{root}/artifacts/{ENCODER_FILE}",
            dst_path=str(dst),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except MlflowException as err:
        raise AsdError(f"cannot download {name}@{alias}: {one_line(err)}") from err
    return Path(local)


def load_champion(
    tracking_uri: str,
    name: str,
    dst: Path | str | None = None,
    alias: str = "champion",
    map_location: str = "cpu",
) -> tuple[Encoder, Config, dict[str, Any]]:
    """Download and load the champion: ``(Encoder, Config, extra)`` as ``load_encoder`` gives."""
    if dst is not None:
        return load_encoder(download_champion(tracking_uri, name, dst, alias), map_location)
    with tempfile.TemporaryDirectory(prefix="asd-champion-") as tmp:
        return load_encoder(download_champion(tracking_uri, name, tmp, alias), map_location)


def model_version(tracking_uri: str, name: str, ref: str) -> ModelVersion:
    """The version ``ref`` names: a number, or an alias (``champion``)."""
    client = client_for(tracking_uri)
    if ref.isdigit():
        try:
            return client.get_model_version(name, ref)
        except MlflowException as err:
            raise AsdError(f"model {name} has no version {ref}: {one_line(err)}") from err
    holder = alias_holder(client, name, ref)
    if holder is None:
        raise AsdError(f"model {name} has no version with alias '{ref}' at {tracking_uri}")
    return holder


def download_model_folder(
    tracking_uri: str, name: str, ref: str, folder: str, dst: Path | str
) -> tuple[Path, ModelVersion]:
    """Download the artifact ``folder`` of version ``ref`` of ``name`` into ``dst``.

    A detector's folder is ``detector`` (:mod:`asd.serve.model`). Returns (local path, version).
    """
    client = client_for(tracking_uri)
    version = model_version(tracking_uri, name, ref)
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)  # never score from what an older download left
    dst.mkdir(parents=True)
    try:
        root = client.get_model_version_download_uri(name, version.version).rstrip("/")
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{root}/artifacts/{folder}",
            dst_path=str(dst),
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    except MlflowException as err:
        raise AsdError(f"cannot download {name} {ref}: {one_line(err)}") from err
    return Path(local), version
