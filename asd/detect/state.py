"""A fitted scorer as plain arrays and JSON: what a detector artifact saves instead of a pickle.

A pickled scikit-learn estimator runs arbitrary code when loaded and breaks across versions;
the numbers that score a clip are few. Per (machine, section) a scorer keeps: Mahalanobis,
the covariance model's ``location_``, ``covariance_`` and ``precision_`` and the domain
centres; kNN, one bank of unit rows per domain; GMM, the mixture's ``weights_``, ``means_``,
``covariances_`` and ``precisions_cholesky_`` and the centres. Every scorer also keeps the
section's out-of-fold normal training scores and its threshold. :func:`restore` rebuilds a
scorer whose ``score_samples`` runs the very code the fitted one ran, so scores are equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.covariance import EmpiricalCovariance
from sklearn.mixture import GaussianMixture

from asd.detect.gmm import GmmScorer
from asd.detect.knn import KnnScorer
from asd.detect.mahalanobis import MahalanobisScorer
from asd.detect.scorer import Key, SectionScorer
from asd.errors import AsdError

KINDS: dict[str, type[SectionScorer]] = {
    "mahalanobis": MahalanobisScorer,
    "knn": KnnScorer,
    "gmm": GmmScorer,
}
"""Scorer kind (as saved) -> class."""
_GMM_FIELDS = ("weights", "means", "covariances", "precisions_cholesky")


@dataclass
class SectionState:
    """One section's fitted numbers: named arrays, the domain order of centres or banks."""

    arrays: dict[str, np.ndarray]
    """Model arrays (``location``, ``bank.0`` ...) and ``train_scores`` (out-of-fold)."""
    domains: list[str]
    """Domains of ``centre.<i>`` / ``bank.<i>``, in the fitted scorer's order."""
    threshold: float
    """The scorer's own decision threshold for this section."""
    fallback: str = ""
    """Why a fallback model was used ('' when none was)."""


@dataclass
class ScorerState:
    """A whole fitted scorer: its kind, its settings and every section's state."""

    kind: str
    settings: dict[str, Any]
    n_features: int
    sections: dict[Key, SectionState] = field(default_factory=dict)


def kind_of(scorer: SectionScorer) -> str:
    """The saved name of a scorer's class."""
    for kind, cls in KINDS.items():
        if type(scorer) is cls:
            return kind
    raise AsdError(f"cannot save a {type(scorer).__name__}: known scorers are {', '.join(KINDS)}")


def export_state(scorer: SectionScorer) -> ScorerState:
    """The fitted numbers of ``scorer`` (see the module docstring)."""
    kind = kind_of(scorer)
    state = ScorerState(kind, scorer.get_params(), int(scorer.n_features_in_))
    for key in scorer.sections():
        arrays: dict[str, np.ndarray] = {"train_scores": np.asarray(scorer.train_scores_[key])}
        if isinstance(scorer, KnnScorer):
            groups = scorer.banks_[key]
            arrays |= {f"bank.{i}": v for i, v in enumerate(groups.values())}
        elif isinstance(scorer, MahalanobisScorer):
            groups = scorer.centres_[key]
            est = scorer.estimators_[key]
            arrays |= {"location": est.location_, "covariance": est.covariance_}
            arrays["precision"] = est.get_precision()
        else:
            assert isinstance(scorer, GmmScorer)
            groups = scorer.centres_[key]
            mixture = scorer.mixtures_[key]
            arrays |= {name: getattr(mixture, f"{name}_") for name in _GMM_FIELDS}
        if not isinstance(scorer, KnnScorer):
            arrays |= {f"centre.{i}": v for i, v in enumerate(groups.values())}
        state.sections[key] = SectionState(
            {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()},
            list(groups),
            float(scorer.thresholds_[key]),
            scorer.fallbacks_.get(key, ""),
        )
    return state


def restore(state: ScorerState) -> SectionScorer:
    """A fitted scorer of ``state``'s kind and settings, from its arrays alone."""
    if state.kind not in KINDS:
        raise AsdError(f"unknown scorer kind {state.kind!r} (known: {', '.join(KINDS)})")
    scorer = KINDS[state.kind](**state.settings)
    scorer._reset()
    scorer.n_features_in_ = state.n_features
    scorer.thresholds_, scorer.train_scores_, scorer.fallbacks_ = {}, {}, {}
    for key, sec in state.sections.items():
        a = sec.arrays
        scorer.thresholds_[key] = sec.threshold
        scorer.train_scores_[key] = a["train_scores"]
        if sec.fallback:
            scorer.fallbacks_[key] = sec.fallback
        if isinstance(scorer, KnnScorer):
            scorer.banks_[key] = {d: a[f"bank.{i}"] for i, d in enumerate(sec.domains)}
            continue
        centres = {d: a[f"centre.{i}"] for i, d in enumerate(sec.domains)}
        if isinstance(scorer, MahalanobisScorer):
            est = EmpiricalCovariance(store_precision=True)
            est.location_, est.covariance_, est.precision_ = (
                a["location"], a["covariance"], a["precision"],
            )  # fmt: skip
            est.n_features_in_ = state.n_features
            scorer.estimators_[key], scorer.centres_[key] = est, centres
        else:
            assert isinstance(scorer, GmmScorer)
            mixture = GaussianMixture(len(a["weights"]), covariance_type=scorer.covariance_type)
            for name in _GMM_FIELDS:
                setattr(mixture, f"{name}_", a[name])
            mixture.n_features_in_ = state.n_features
            scorer.mixtures_[key], scorer.centres_[key] = mixture, centres
    return scorer


def merge(old: ScorerState, new: ScorerState) -> ScorerState:
    """``old`` with ``new``'s sections added (same kind, settings and width; none shared)."""
    if (old.kind, old.settings, old.n_features) != (new.kind, new.settings, new.n_features):
        raise AsdError(
            f"cannot merge a {new.kind} scorer ({new.n_features}-d) into a {old.kind} scorer "
            f"({old.n_features}-d) of other settings"
        )
    shared = sorted(set(old.sections) & set(new.sections))
    if shared:
        names = ", ".join(f"{m}/{s:02d}" for m, s in shared)
        raise AsdError(f"the detector already has machine/section {names}")
    return ScorerState(old.kind, old.settings, old.n_features, {**old.sections, **new.sections})


# ------------------------------------------------------------------------- files
def write_state(state: ScorerState, folder: Path, stem: str) -> list[Path]:
    """``<stem>.json`` (kind, settings, sections) and ``<stem>.npz`` (their arrays)."""
    sections: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    for i, ((machine, section), sec) in enumerate(sorted(state.sections.items())):
        sections.append(
            {"machine": machine, "section": section, "domains": sec.domains,
             "threshold": sec.threshold, "fallback": sec.fallback, "arrays": sorted(sec.arrays)}
        )  # fmt: skip
        arrays |= {f"{i}.{name}": value for name, value in sec.arrays.items()}
    meta = {"kind": state.kind, "settings": state.settings, "n_features": state.n_features}
    json_path, npz_path = folder / f"{stem}.json", folder / f"{stem}.npz"
    json_path.write_text(json.dumps({**meta, "sections": sections}, indent=1, sort_keys=True))
    with open(npz_path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return [json_path, npz_path]


def read_state(folder: Path, stem: str) -> ScorerState:
    """Inverse of :func:`write_state` (no pickle: ``allow_pickle=False``)."""
    json_path, npz_path = folder / f"{stem}.json", folder / f"{stem}.npz"
    try:
        meta = json.loads(json_path.read_text())
        with np.load(npz_path, allow_pickle=False) as npz:
            stored = {name: npz[name] for name in npz.files}
        state = ScorerState(meta["kind"], dict(meta["settings"]), int(meta["n_features"]))
        for i, sec in enumerate(meta["sections"]):
            arrays = {name: stored[f"{i}.{name}"] for name in sec["arrays"]}
            key = (str(sec["machine"]), int(sec["section"]))
            state.sections[key] = SectionState(
                arrays, [str(d) for d in sec["domains"]], float(sec["threshold"]),
                str(sec.get("fallback", "")),
            )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AsdError(f"cannot read scorer state {json_path}: {err}") from None
    return state
