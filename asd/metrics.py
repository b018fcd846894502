"""The official DCASE 2023 Task 2 score, computed the way the challenge's evaluator does.

Per (machine, section):

- ``auc_source``: ROC AUC of the source-domain normal clips against *all* anomalous clips of the
  section (both domains); ``auc_target`` likewise with the target normals. An anomaly is an
  anomaly whatever its domain, so a target anomaly that scores low lowers ``auc_source`` too.
- ``pauc``: partial AUC for false-positive rates in [0, 0.1] over all clips of the section,
  as ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-standardised: 0.5 = chance, 1 = perfect),
  the value the official tools report.

The official score ``hmean`` is the harmonic mean of every ``auc_source``, ``auc_target`` and
``pauc`` value over all machines and sections. ``results`` is a DataFrame with columns
``machine, section, domain ('source'|'target'), label ('normal'|'anomaly' or 0/1),
anomaly_score``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from asd.errors import AsdError

MAX_FPR = 0.1
"""The pAUC range of DCASE 2023 Task 2: false-positive rates in [0, 0.1]."""
EPS = float(np.finfo(float).eps)
"""Values are clipped to this before a harmonic mean, so a 0 AUC cannot divide by zero."""
METRICS = ("auc_source", "auc_target", "pauc")
"""The per-section metric keys, in report order."""

_COLUMNS = ("machine", "section", "domain", "label", "anomaly_score")


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean of ``values`` clipped at ``EPS`` (as the official evaluator does)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise AsdError("harmonic mean of no values")
    if np.isnan(v).any():
        raise AsdError("harmonic mean of NaN values")
    return float(v.size / np.sum(1.0 / np.maximum(v, EPS)))


def anomaly_labels(label: pd.Series) -> np.ndarray:
    """0 (normal) / 1 (anomaly) from 'normal'/'anomaly' strings, 0/1 or booleans."""
    text = label.astype(str).str.lower().to_numpy()
    known = {"normal": 0, "anomaly": 1, "0": 0, "1": 1, "false": 0, "true": 1}
    bad = sorted({t for t in text if t not in known})
    if bad:
        raise AsdError(f"labels must be 'normal'/'anomaly' or 0/1, got {', '.join(bad[:5])}")
    return np.array([known[t] for t in text], dtype=int)


def section_scores(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, section): ``auc_source, auc_target, pauc, n_clips``.

    AsdError naming the machine and section when it has no anomalies, or no normal clips of
    a domain (the AUC would be undefined).
    """
    _check_results(results)
    y_all = anomaly_labels(results["label"])
    domain_all = results["domain"].astype(str).to_numpy()
    score_all = results["anomaly_score"].to_numpy(dtype=float)
    rows = []
    groups = results.groupby(["machine", "section"], sort=True).indices
    for (machine, section), pos in groups.items():
        y, domain, s = y_all[pos], domain_all[pos], score_all[pos]
        name = f"machine {machine} section {int(section):02d}"
        anomalous = y == 1
        if not anomalous.any():
            raise AsdError(f"{name}: no anomalous clips, AUC is undefined")
        row = {"machine": machine, "section": int(section)}
        for dom in ("source", "target"):
            normal = (y == 0) & (domain == dom)
            if not normal.any():
                raise AsdError(f"{name}: no {dom}-domain normal clips, auc_{dom} is undefined")
            keep = normal | anomalous  # this domain's normals vs every anomaly of the section
            row[f"auc_{dom}"] = float(roc_auc_score(y[keep], s[keep]))
        row["pauc"] = float(roc_auc_score(y, s, max_fpr=MAX_FPR))
        row["n_clips"] = len(pos)
        rows.append(row)
    return pd.DataFrame(rows, columns=["machine", "section", *METRICS, "n_clips"])


def official_score(results: pd.DataFrame) -> dict[str, float]:
    """The official score and its parts.

    ``hmean``: harmonic mean of all ``auc_source``, ``auc_target`` and ``pauc`` values over every
    machine and section (the DCASE 2023 ranking score). ``auc_source``, ``auc_target``,
    ``pauc``: each the *harmonic* mean of that metric over sections (the evaluator's summary
    row). ``n_sections``: how many sections went in.
    """
    return summarize(section_scores(results))


def summarize(table: pd.DataFrame) -> dict[str, float]:
    """:func:`official_score` from a ready :func:`section_scores` table (no AUC recomputed)."""
    out = {"hmean": harmonic_mean(table[list(METRICS)].to_numpy().ravel())}
    for metric in METRICS:
        out[metric] = harmonic_mean(table[metric])
    out["n_sections"] = float(len(table))
    return out


def machine_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per-machine metrics, one row per machine sorted by name.

    ``auc_source, auc_target, pauc``: harmonic mean over the machine's sections; ``hmean``:
    harmonic mean of all its section values (DCASE 2023 has one section per machine).
    """
    table = section_scores(results)
    rows = []
    for machine, part in table.groupby("machine", sort=True):
        row: dict[str, object] = {"machine": machine}
        for metric in METRICS:
            row[metric] = harmonic_mean(part[metric])
        row["hmean"] = harmonic_mean(part[list(METRICS)].to_numpy().ravel())
        rows.append(row)
    return pd.DataFrame(rows, columns=["machine", *METRICS, "hmean"])


def _check_results(results: pd.DataFrame) -> None:
    """Required columns, at least one row, finite scores; AsdError otherwise."""
    missing = [c for c in _COLUMNS if c not in results.columns]
    if missing:
        raise AsdError(f"results lack column(s) {', '.join(missing)}")
    if len(results) == 0:
        raise AsdError("results have no rows")
    scores = pd.to_numeric(results["anomaly_score"], errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(scores).all():
        raise AsdError("results: anomaly_score has NaN, inf or non-numeric values")
    domains = set(results["domain"].astype(str))
    if not domains <= {"source", "target"}:
        raise AsdError(f"results: domain must be 'source' or 'target', got {sorted(domains)}")
