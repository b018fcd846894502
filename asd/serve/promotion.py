"""Promotion: move the ``champion`` alias to a version only when it beats the holder.

A candidate replaces the champion only when it is *comparable* (same ``metric``,
``data_fingerprint`` and ``estimator``, :class:`~asd.serve.registry.RegistryTags`) and strictly
better (higher ``metric_value``); with no champion it is promoted. MLflow has no compare-and-set
on aliases, so :func:`promote` builds one:

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
import time
from collections.abc import Iterator

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from asd.errors import AsdError, one_line
from asd.serve.registry import (
    BOOKKEEPING_PREFIX,
    HOLDOUT_HMEAN,
    RegistryTags,
    alias_holder,
    client_for,
)
from asd.tracking import sqlite_path

CLAIM_TAG = f"{BOOKKEEPING_PREFIX}promotion_claim"
"""Version tag ``<alias>@<unix time>`` a promoter stamps before moving an alias."""
CLAIM_WINDOW_S = 300.0
"""How long a claim counts in a racing promoter's settle."""
SETTLE_S = 0.2
"""Pause between moving an alias and re-reading it, so racing moves land first."""
RETRIES = 5
"""How often a promoter re-decides after the alias moved under it."""


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


def _compare(candidate: ModelVersion, champ: ModelVersion | None) -> tuple[bool, str]:
    """(candidate should replace champ, reason): comparable and strictly better."""
    try:
        c = RegistryTags.from_tags(candidate.tags)
    except AsdError as err:
        return False, f"candidate v{candidate.version}: {err}"
    score = f"{c.metric} {c.metric_value:.4g}"
    if champ is None:
        return True, f"no champion yet: v{candidate.version} {score} becomes champion"
    if champ.version == candidate.version:
        return False, f"v{candidate.version} is already the champion"
    try:
        h = RegistryTags.from_tags(champ.tags)
    except AsdError as err:
        return False, f"incomparable: champion v{champ.version}: {err}"
    if key := c.differs_from(h):
        return False, (
            f"incomparable: {key.replace('_', ' ')} differs (candidate v{candidate.version} "
            f"{getattr(c, key)}, champion v{champ.version} {getattr(h, key)})"
        )
    where = f"on data {c.data_fingerprint[:12]} (estimator {c.estimator})"
    champ_score = f"{h.metric} {h.metric_value:.4g}"
    beats = c.metric_value > h.metric_value
    return beats, (
        f"candidate v{candidate.version} {score} {'beats' if beats else 'does not beat'} "
        f"champion v{champ.version} {champ_score} {where}"
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
        holder = alias_holder(client, name, alias)
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
    return str(alias_holder(client, name, alias).version)  # type: ignore[union-attr]


def promote(
    tracking_uri: str, name: str, version: str, alias: str = "champion"
) -> PromotionDecision:
    """Point ``alias`` at ``version`` if it is comparable with and better than the champion.

    Safe against racing promoters (see the module docstring for the exact guarantee).
    """
    client = client_for(tracking_uri)
    version = str(version)
    try:
        with _local_lock(tracking_uri, name):
            decision = _promote(client, name, version, alias)
        note = _note_of(client.get_model_version(name, version), version)
    except MlflowException as err:
        raise AsdError(f"cannot promote {name} v{version}: {one_line(err)}") from err
    if note:
        decision = dataclasses.replace(decision, reason=f"{decision.reason}; {note}")
    return decision


def _note_of(mv: ModelVersion, version: str) -> str:
    try:
        return reference_note(RegistryTags.from_tags(mv.tags), version)
    except AsdError:
        return ""  # its tags say why in the decision already


def reference_note(tags: RegistryTags, version: str) -> str:
    """A warning when a version does not beat the untrained reference on held-out machines.

    The sweep tags each version with the reference's score on the same group and scorer
    (``reference_metric_value``); '' when it is better, or when the tags cannot tell.
    """
    ref = tags.reference_metric_value
    if tags.metric != HOLDOUT_HMEAN or ref is None or tags.metric_value > ref:
        return ""
    return (
        f"note: v{version} ({HOLDOUT_HMEAN} {tags.metric_value:.4g}) does not beat the untrained "
        f"reference ({ref:.4g}, {tags.estimator}) on the held-out machine types"
    )


def _promote(client: mlflow.MlflowClient, name: str, version: str, alias: str) -> PromotionDecision:
    first_champ: str | None = None
    for attempt in range(RETRIES):
        candidate = client.get_model_version(name, version)
        champ = alias_holder(client, name, alias)
        champ_version = str(champ.version) if champ is not None else None
        if attempt == 0:
            first_champ = champ_version
        ok, reason = _compare(candidate, champ)
        if not ok:
            return PromotionDecision(False, reason, champ_version, version)
        client.set_model_version_tag(name, version, CLAIM_TAG, f"{alias}@{time.time():.3f}")
        now = alias_holder(client, name, alias)
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
