"""The model registry: register trial encoders, promote the best one to an alias.

MLflow 3 has no stages: the serving encoder is the version behind the ``champion`` alias
(``models:/<name>@champion``), and the facts needed to judge it live in version tags:
``metric``, ``metric_value``, ``estimator``, ``data_fingerprint``, ``sweep_id``, ``trial_id``,
``config_hash``.

Promotion guarantee. A candidate replaces the champion only when it is *comparable* (same
``metric``, ``data_fingerprint`` and ``estimator`` tags) and strictly better (higher
``metric_value``); with no champion it is promoted. MLflow has no compare-and-set on aliases,
so :func:`promote` builds one:

1. on a local sqlite store, promotions of one model are serialised by a file lock beside
   the database (covers every process on the machine);
2. otherwise (a shared server), a promoter first stamps a *claim* tag on its version, re-reads
   the alias just before moving it (restarting if it moved), moves it, waits a moment and
   then *settles*: it re-reads the alias holder and every version claimed for the alias in
   the last ``CLAIM_WINDOW_S`` seconds and moves the alias to the best of those comparable
   with the holder, repeating until the read is stable.

Because every move is followed by the mover's own settle and every claim precedes its
move, the last settle sees every competing claim: after racing promotions of comparable
candidates the alias ends on the best of them (and a loser reports ``promoted=False``).
Candidates that are incomparable with each other and race with no champion in place end
on whichever settled last. A version claimed within the window may be re-promoted by a
racing settle even if a person moved the alias by hand in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from asd.config import Config
from asd.errors import AsdError, one_line
from asd.model.encoder import Encoder, load_encoder
from asd.tracking import ENCODER_FILE, check_tracking, is_unavailable, sqlite_path
from asd.tracking.uri import is_http

COMPARABLE_BY = ("metric", "data_fingerprint", "estimator")
"""Version tags that must match for two encoders' metric values to be compared."""
REQUIRED_TAGS = (*COMPARABLE_BY, "metric_value")
"""Version tags :func:`register_encoder` insists on (promotion needs them)."""
CLAIM_TAG = "asd.promotion_claim"
"""Version tag ``<alias>@<unix time>`` a promoter stamps before moving an alias."""
CLAIM_WINDOW_S = 300.0
"""How long a claim counts in a racing promoter's settle."""
SETTLE_S = 0.2
"""Pause between moving an alias and re-reading it, so racing moves land first."""
RETRIES = 5
"""How often a promoter re-decides after the alias moved under it."""
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
"""Logged-model tag listing the registered versions made from it (shown on its UI page)."""
_GLOBAL_URI = threading.Lock()
"""Held while the process-wide tracking URI is borrowed (see :func:`_resolving_in`)."""


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """The outcome of :func:`promote`, with a reason a person can read."""

    promoted: bool
    """True when the alias now points at the candidate because of this call."""
    reason: str
    """One line: why (not)."""
    champion_version: str | None
    """The champion before the call (``None``: there was none)."""
    candidate_version: str
    """The version that asked to be promoted."""


def _client(tracking_uri: str) -> mlflow.MlflowClient:
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
    tags: dict[str, Any],
    description: str | None = None,
) -> str:
    """Register a logged encoder (``models:/<model_id>`` from Tracker.log_encoder) as a version.

    ``tags`` must hold ``metric``, ``metric_value``, ``estimator`` and ``data_fingerprint``
    (and should hold ``sweep_id``, ``trial_id``, ``config_hash``); ``description`` is the
    version's Markdown description in the UI. Returns the version.
    """
    missing = [k for k in REQUIRED_TAGS if k not in tags]
    if missing:
        raise AsdError(f"cannot register {model_uri}: tags lack {', '.join(missing)}")
    try:
        float(tags["metric_value"])
    except (TypeError, ValueError):
        raise AsdError(f"tag metric_value must be a number, got {tags['metric_value']!r}") from None
    if model_uri.startswith("models:/pending-"):
        raise AsdError(f"{model_uri} is still in the tracking journal: run sync_journal first")
    client = _client(tracking_uri)
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
                tags={k: str(v) for k, v in tags.items()},
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
        _client(tracking_uri).update_registered_model(name, description=description)
    except MlflowException as err:
        raise AsdError(f"cannot describe model {name}: {one_line(err)}") from err


# --------------------------------------------------------------------------- read


def champion(tracking_uri: str, name: str, alias: str = "champion") -> ModelVersion | None:
    """The version behind ``alias`` (``None`` when the model or the alias does not exist)."""
    return _holder(_client(tracking_uri), name, alias)


def _holder(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
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
    client = _client(tracking_uri)
    holder = _holder(client, name, alias)
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
    client = _client(tracking_uri)
    if ref.isdigit():
        try:
            return client.get_model_version(name, ref)
        except MlflowException as err:
            raise AsdError(f"model {name} has no version {ref}: {one_line(err)}") from err
    holder = _holder(client, name, ref)
    if holder is None:
        raise AsdError(f"model {name} has no version with alias '{ref}' at {tracking_uri}")
    return holder


def download_model_folder(
    tracking_uri: str, name: str, ref: str, folder: str, dst: Path | str
) -> tuple[Path, ModelVersion]:
    """Download the artifact ``folder`` of version ``ref`` of ``name`` into ``dst``.

    A detector's folder is ``detector`` (:mod:`asd.serve.model`). Returns (local path, version).
    """
    client = _client(tracking_uri)
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


# --------------------------------------------------------------------------- promote


def _compare(candidate: ModelVersion, champ: ModelVersion | None) -> tuple[bool, str]:
    """(candidate should replace champ, reason): comparable and strictly better."""
    c = candidate.tags
    missing = [k for k in REQUIRED_TAGS if k not in c]
    if missing:
        return False, f"candidate v{candidate.version} lacks tags {', '.join(missing)}"
    score = f"{c['metric']} {float(c['metric_value']):.4g}"
    if champ is None:
        return True, f"no champion yet: v{candidate.version} {score} becomes champion"
    h = champ.tags
    if champ.version == candidate.version:
        return False, f"v{candidate.version} is already the champion"
    for key in COMPARABLE_BY:
        if c.get(key) != h.get(key):
            label = key.replace("_", " ")
            return False, (
                f"incomparable: {label} differs (candidate v{candidate.version} "
                f"{c.get(key)}, champion v{champ.version} {h.get(key)})"
            )
    ours, theirs = float(c["metric_value"]), float(h["metric_value"])
    where = f"on data {c['data_fingerprint'][:12]} (estimator {c['estimator']})"
    champ_score = f"{h['metric']} {theirs:.4g}"
    if ours > theirs:
        return True, (
            f"candidate v{candidate.version} {score} beats champion v{champ.version} "
            f"{champ_score} {where}"
        )
    return False, (
        f"candidate v{candidate.version} {score} does not beat champion v{champ.version} "
        f"{champ_score} {where}"
    )


@contextlib.contextmanager
def _local_lock(tracking_uri: str, name: str) -> Iterator[None]:
    """An exclusive file lock per model beside a sqlite database (no-op for servers)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    lock_path = db.parent / f".{db.name}.promote-{digest}.lock"
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _claims(client: mlflow.MlflowClient, name: str, alias: str) -> list[ModelVersion]:
    """Versions whose promotion to ``alias`` was claimed within the claim window."""
    now, recent = time.time(), []
    for mv in client.search_model_versions(f"name = '{name}'"):
        tag = mv.tags.get(CLAIM_TAG, "")
        claimed_alias, _, stamp = tag.rpartition("@")
        try:
            fresh = claimed_alias == alias and now - float(stamp) <= CLAIM_WINDOW_S
        except ValueError:
            fresh = False
        if fresh:
            recent.append(mv)
    return recent


def _settle(client: mlflow.MlflowClient, name: str, alias: str) -> str | None:
    """Move the alias to the best comparable of (holder, recent claims) until stable."""
    for _ in range(2 * RETRIES):
        holder = _holder(client, name, alias)
        if holder is None:
            return None
        best = holder
        for mv in _claims(client, name, alias):
            if _compare(mv, best)[0]:
                best = mv
        if best.version == holder.version:
            return str(holder.version)
        client.set_registered_model_alias(name, alias, best.version)
        time.sleep(SETTLE_S)
    return str(_holder(client, name, alias).version)  # type: ignore[union-attr]


def promote(
    tracking_uri: str, name: str, version: str, alias: str = "champion"
) -> PromotionDecision:
    """Point ``alias`` at ``version`` if it is comparable with and better than the champion.

    Safe against racing promoters (see the module docstring for the exact guarantee).
    """
    client = _client(tracking_uri)
    version = str(version)
    try:
        with _local_lock(tracking_uri, name):
            decision = _promote(client, name, version, alias)
        note = reference_note(client.get_model_version(name, version).tags, version)
    except MlflowException as err:
        raise AsdError(f"cannot promote {name} v{version}: {one_line(err)}") from err
    if note:
        decision = dataclasses.replace(decision, reason=f"{decision.reason}; {note}")
    return decision


def reference_note(tags: dict[str, str], version: str) -> str:
    """A warning when a version does not beat the untrained reference on held-out machines.

    The sweep tags each version with the reference's score on the same group and scorer
    (``reference_metric_value``); '' when it is better, or when the tags cannot tell.
    """
    if tags.get("metric") != "holdout.hmean" or "reference_metric_value" not in tags:
        return ""
    try:
        ours, ref = float(tags["metric_value"]), float(tags["reference_metric_value"])
    except (KeyError, ValueError):
        return ""
    if ours > ref:
        return ""
    return (
        f"note: v{version} (holdout.hmean {ours:.4g}) does not beat the untrained reference "
        f"({ref:.4g}, {tags.get('estimator', '?')}) on the held-out machine types"
    )


def _promote(client: mlflow.MlflowClient, name: str, version: str, alias: str) -> PromotionDecision:
    first_champ: str | None = None
    for attempt in range(RETRIES):
        candidate = client.get_model_version(name, version)
        champ = _holder(client, name, alias)
        champ_version = str(champ.version) if champ is not None else None
        if attempt == 0:
            first_champ = champ_version
        ok, reason = _compare(candidate, champ)
        if not ok:
            return PromotionDecision(False, reason, champ_version, version)
        client.set_model_version_tag(name, version, CLAIM_TAG, f"{alias}@{time.time():.3f}")
        now = _holder(client, name, alias)
        if (str(now.version) if now is not None else None) != champ_version:
            continue  # the alias moved while we decided: decide again
        client.set_registered_model_alias(name, alias, version)
        time.sleep(SETTLE_S)
        winner = _settle(client, name, alias)
        if winner == version:
            return PromotionDecision(True, reason, first_champ, version)
        return PromotionDecision(
            False,
            f"lost a race: v{winner} is the better comparable candidate for {alias}",
            first_champ,
            version,
        )
    return PromotionDecision(
        False, f"the {alias} alias kept moving; gave up after {RETRIES} tries", first_champ, version
    )
