"""What `asd evaluate` prints: per-machine tables per scorer, saying which score each is.

Pure formatting of an :class:`~asd.detect.pipeline.Evaluation` into text, so the wording of
the official score lives in one place and is testable without running a command.
"""

from __future__ import annotations

from asd.detect.detector import machine_comparison
from asd.detect.metrics import machine_table
from asd.detect.pipeline import Evaluation


def format_evaluation(evaluation: Evaluation, title: str) -> str:
    """Per-machine AUC (source), AUC (target), pAUC and hmean per estimator, in percent."""
    lines = [f"== {title}"]
    for name, res in evaluation.by_estimator.items():
        labelled = res.results.loc[res.results["label"].isin(["normal", "anomaly"])]
        if labelled.empty:
            lines.append(f"-- estimator {name}: no labelled test clips (scores written only)")
            continue
        table = machine_table(labelled).set_index("machine")
        s = res.summary
        one_domain = s.get("domains") == 1
        columns = ["auc_source", "pauc", "hmean"] if one_domain else list(_COLUMNS_2023)
        shown = (table[columns] * 100).round(2)
        if one_domain:
            shown = shown.rename(columns={"auc_source": "auc"})
        lines.append(f"-- estimator {name} ({_estimator_name(name)})")
        lines.append(shown.to_string())
        lines += _score_lines(s)
        for key, why in res.fallbacks.items():
            lines.append(f"   note: {key}: {why}")
    return "\n".join(lines)


_COLUMNS_2023 = ("auc_source", "auc_target", "pauc", "hmean")


def _score_lines(s: dict[str, float]) -> list[str]:
    """The summary's score, saying which score it is."""
    if s.get("domains") != 1:
        return [
            f"official score (harmonic mean over machines of AUC-s, AUC-t, pAUC): "
            f"{100 * s['hmean']:.2f} %"
        ]
    return [
        f"score (harmonic mean of AUC and pAUC over sections; one domain, so NOT the DCASE 2023 "
        f"official score): {100 * s['hmean']:.2f} %",
        f"DCASE 2020 official figures: AUC {100 * s['dcase2020_auc']:.2f} %, pAUC "
        f"{100 * s['dcase2020_pauc']:.2f} % (arithmetic means over sections), "
        f"their mean {100 * s['dcase2020']:.2f} %",
    ]


def _estimator_name(name: str) -> str:
    names = {
        "ml": "EmpiricalCovariance",
        "elliptic": "EllipticEnvelope",
        "knn": "cosine kNN",
        "gmm": "GaussianMixture",
    }
    return names.get(name, name)


def format_machines(evaluation: Evaluation, estimator: str) -> str:
    """Per machine type: hmean % of the detector, its members and the references."""
    table = machine_comparison(evaluation, estimator)
    if table.empty:
        return ""
    return f"-- per machine type, hmean % ({estimator})\n{table.to_string()}"
