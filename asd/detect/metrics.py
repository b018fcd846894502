"""The official DCASE 2023 Task 2 score, computed the way the challenge's evaluator does.

Per (machine, section):

- ``auc_source``: ROC AUC of the source-domain normal clips against *all* anomalous clips of the
  section (both domains); ``auc_target`` likewise with the target normals. An anomaly is an
  anomaly whatever its domain, so a target anomaly that scores low lowers ``auc_source`` too.
- ``pauc``: partial AUC for false-positive rates in [0, 0.1] over all clips of the section,
  as ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-standardised: 0.5 = chance, 1 = perfect),
  the value the official tools report.

The official score ``hmean`` is the harmonic mean of every ``auc_source``, ``auc_target`` and
``pauc`` value over all machines and sections.

One-domain sets (DCASE 2020, MIMII, ToyADMOS: every clip 'source', no target clip in a section)
get ``auc_source`` = the AUC of all normals against all anomalies and ``auc_target`` = NaN;
their ``hmean`` is the harmonic mean of every AUC and pAUC, *not* the DCASE 2023 official
score, and the summary adds the DCASE 2020 official figures (``dcase2020``: the mean of the
arithmetic-mean AUC and pAUC) and ``domains`` = 1. ``results`` is a DataFrame with columns
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
    a domain (the AUC would be undefined). A section with no target-domain clip at all is a
    one-domain section: ``auc_target`` is NaN there (see the module docstring).
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
        one_domain = not (domain == "target").any()
        for dom in ("source",) if one_domain else ("source", "target"):
            normal = (y == 0) & (domain == dom)
            if not normal.any():
                raise AsdError(f"{name}: no {dom}-domain normal clips, auc_{dom} is undefined")
            keep = normal | anomalous  # this domain's normals vs every anomaly of the section
            row[f"auc_{dom}"] = float(roc_auc_score(y[keep], s[keep]))
        if one_domain:
            row["auc_target"] = float("nan")
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
    """:func:`official_score` from a ready :func:`section_scores` table (no AUC recomputed).

    A table of one-domain sections gets :func:`one_domain_summary`; one that mixes one- and
    two-domain sections is refused (no score is defined over both).
    """
    single = table["auc_target"].isna().to_numpy()
    if single.all():
        return one_domain_summary(table)
    if single.any():
        names = ", ".join(
            f"{m} section {int(s):02d}" for m, s in table.loc[single, ["machine", "section"]].values
        )
        raise AsdError(
            f"{names}: no target-domain clips while other sections have them; "
            "score one-domain and two-domain data separately"
        )
    out = {"hmean": harmonic_mean(table[list(METRICS)].to_numpy().ravel())}
    for metric in METRICS:
        out[metric] = harmonic_mean(table[metric])
    out["n_sections"] = float(len(table))
    return out


def one_domain_summary(table: pd.DataFrame) -> dict[str, float]:
    """The score of one-domain sections, which is *not* the DCASE 2023 official score.

    ``hmean``: harmonic mean of every section's AUC and pAUC (the 2023 rule without the
    target domain, so sweeps rank on the same key); ``auc_source``, ``pauc``: harmonic means
    over sections. ``dcase2020_auc`` and ``dcase2020_pauc``: arithmetic means over sections
    (machine ids), as the DCASE 2020 evaluator reports them; ``dcase2020``: their mean.
    ``domains`` = 1 marks the summary as this one.
    """
    auc, pauc = table["auc_source"].to_numpy(float), table["pauc"].to_numpy(float)
    mean_auc, mean_pauc = float(auc.mean()), float(pauc.mean())
    return {
        "hmean": harmonic_mean(np.concatenate([auc, pauc])),
        "auc_source": harmonic_mean(auc),
        "pauc": harmonic_mean(pauc),
        "dcase2020_auc": mean_auc,
        "dcase2020_pauc": mean_pauc,
        "dcase2020": (mean_auc + mean_pauc) / 2,
        "domains": 1.0,
        "n_sections": float(len(table)),
    }


def machine_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per-machine metrics, one row per machine sorted by name.

    ``auc_source, auc_target, pauc``: harmonic mean over the machine's sections; ``hmean``:
    harmonic mean of all its section values (DCASE 2023 has one section per machine). A
    one-domain machine has ``auc_target`` NaN and ``hmean`` over its AUCs and pAUCs.
    """
    table = section_scores(results)
    rows = []
    for machine, part in table.groupby("machine", sort=True):
        row: dict[str, object] = {"machine": machine}
        for metric in METRICS:
            values = part[metric].dropna()  # only a one-domain auc_target is NaN
            row[metric] = harmonic_mean(values) if len(values) else float("nan")
        values = part[list(METRICS)].to_numpy(float).ravel()
        row["hmean"] = harmonic_mean(values[~np.isnan(values)])
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
