"""Figures for a run: ROC curves, score histograms and per-machine metric bars (PNG files).

Each ``*_figure`` function builds the figure (what a test or a notebook inspects); the function
beside it saves it as a PNG.

matplotlib is imported inside each function so the core never needs it. Figures are drawn on
``matplotlib.figure.Figure`` (Agg canvas) without pyplot's global state; the Agg backend is
selected only when pyplot has not been imported yet, so an interactive session keeps its own.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from asd.detect.metrics import METRICS, anomaly_labels, harmonic_mean
from asd.errors import AsdError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_COLOURS = {"source": "tab:blue", "target": "tab:orange", "normal": "tab:green"}


def _figure(
    n_panels: int, panel_size: tuple[float, float] = (4.0, 3.4)
) -> tuple[Figure, list[Axes]]:
    """A figure with a grid of ``n_panels`` axes (at most 4 per row) and the list of axes."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ncols = min(4, max(1, n_panels))
    nrows = math.ceil(max(1, n_panels) / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _need(results: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise AsdError(f"plot: results lack column(s) {', '.join(missing)}")
    if len(results) == 0:
        raise AsdError("plot: results have no rows")


def _machine_panels(
    results: pd.DataFrame,
) -> tuple[Figure, list[tuple[Axes, str, pd.DataFrame, np.ndarray, np.ndarray]]]:
    """A figure with one panel per machine, and per panel (ax, machine, rows, labels, scores)."""
    machines = sorted(results["machine"].astype(str).unique())
    fig, axes = _figure(len(machines))
    panels = []
    for ax, machine in zip(axes, machines, strict=True):
        part = results[results["machine"].astype(str) == machine]
        y = anomaly_labels(part["label"])
        panels.append((ax, machine, part, y, part["anomaly_score"].to_numpy(dtype=float)))
    return fig, panels


def roc_curves(results: pd.DataFrame, path: str | Path) -> Path:
    """:func:`roc_figure`, saved as a PNG at ``path``."""
    return _save(roc_figure(results), path)


def roc_figure(results: pd.DataFrame) -> Figure:
    """ROC curves per machine: source and target normals, each against all anomalies.

    The official pAUC range (FPR <= 0.1) is shaded. ``results`` as in :mod:`asd.detect.metrics`.
    """
    _need(results, ("machine", "domain", "label", "anomaly_score"))
    fig, panels = _machine_panels(results)
    for ax, machine, part, y, s in panels:
        domain = part["domain"].astype(str).to_numpy()
        ax.axvspan(0, 0.1, color="0.9", label="pAUC range")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
        for dom in ("source", "target"):
            keep = ((y == 0) & (domain == dom)) | (y == 1)
            if len(set(y[keep])) < 2:
                continue  # no normals of this domain or no anomalies: no curve
            fpr, tpr, _ = roc_curve(y[keep], s[keep])
            auc = roc_auc_score(y[keep], s[keep])
            ax.plot(fpr, tpr, color=_COLOURS[dom], label=f"{dom} (AUC {auc:.3f})")
        ax.set_title(machine)
        ax.set_xlabel("false-positive rate (normals)")
        ax.set_ylabel("true-positive rate (anomalies)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(loc="lower right", fontsize="small")
    fig.suptitle("ROC per machine: domain normals vs all anomalies")
    return fig


def score_histograms(
    results: pd.DataFrame,
    path: str | Path,
    threshold: float | dict[Any, float] | None = None,
) -> Path:
    """:func:`histogram_figure`, saved as a PNG at ``path``."""
    return _save(histogram_figure(results, threshold), path)


def histogram_figure(
    results: pd.DataFrame, threshold: float | dict[Any, float] | None = None
) -> Figure:
    """Histograms of normal vs anomalous scores per machine, with the decision threshold.

    The threshold comes from ``threshold`` (one float, or a dict keyed by machine or by
    ``(machine, section)``) or else from a ``threshold`` column of ``results``.
    """
    _need(results, ("machine", "label", "anomaly_score"))
    fig, panels = _machine_panels(results)
    for ax, machine, part, y, s in panels:
        bins: Any = np.histogram_bin_edges(s, bins=30)  # matplotlib's stubs omit arrays
        ax.hist(s[y == 0], bins=bins, alpha=0.6, color=_COLOURS["normal"], label="normal")
        ax.hist(s[y == 1], bins=bins, alpha=0.6, color="tab:red", label="anomaly")
        for t in _thresholds(part, machine, threshold):
            ax.axvline(t, color="black", ls="--", lw=1.2, label=f"threshold {t:.3g}")
        ax.set_title(machine)
        ax.set_xlabel("anomaly score (Mahalanobis distance)")
        ax.set_ylabel("clips")
        ax.legend(fontsize="small")
    fig.suptitle("Anomaly scores: normal vs anomalous clips")
    return fig


def _thresholds(part: pd.DataFrame, machine: str, threshold: Any) -> list[float]:
    """The distinct thresholds that apply to one machine's rows (possibly none)."""
    if threshold is None:
        if "threshold" not in part.columns:
            return []
        return sorted({float(t) for t in part["threshold"].dropna()})
    if isinstance(threshold, dict):
        if machine in threshold:
            return [float(threshold[machine])]
        sections = part["section"] if "section" in part.columns else []
        return sorted(
            {
                float(threshold[(machine, int(s))])
                for s in sections
                if (machine, int(s)) in threshold
            }
        )
    return [float(threshold)]


def machine_bars(table: pd.DataFrame, path: str | Path, overall: float | None = None) -> Path:
    """:func:`bars_figure`, saved as a PNG at ``path``."""
    return _save(bars_figure(table, overall), path)


def bars_figure(table: pd.DataFrame, overall: float | None = None) -> Figure:
    """Grouped bars of ``auc_source, auc_target, pauc`` per machine, with each machine's hmean.

    ``table`` is :func:`asd.detect.metrics.machine_table` (``machine`` as a column or the index).
    The
    dashed line is ``overall`` (pass ``official_score(...)['hmean']``) or else the harmonic mean
    of the table's three metric columns, equal to the official score when every machine has
    the same number of sections.
    """
    missing = [c for c in METRICS if c not in table.columns]
    if missing or len(table) == 0:
        raise AsdError(f"machine_bars: table lacks column(s) {', '.join(missing) or 'rows'}")
    names = table["machine"] if "machine" in table.columns else table.index
    names = [str(n) for n in names]
    fig, axes = _figure(1, panel_size=(max(6.0, 1.3 * len(names) + 2), 4.2))
    ax = axes[0]
    x = np.arange(len(names))
    width = 0.26
    colours = ("tab:blue", "tab:orange", "tab:purple")
    for i, (metric, colour) in enumerate(zip(METRICS, colours, strict=True)):
        ax.bar(
            x + (i - 1) * width, table[metric].to_numpy(float), width, label=metric, color=colour
        )
    if "hmean" in table.columns:
        ax.plot(x, table["hmean"].to_numpy(float), "k_", ms=28, mew=2.5, label="hmean")
    line = (
        overall if overall is not None else harmonic_mean(table[list(METRICS)].to_numpy().ravel())
    )
    ax.axhline(line, color="black", ls="--", lw=1, label=f"overall hmean {line:.3f}")
    ax.axhline(0.5, color="0.6", ls=":", lw=1)
    ax.set_xticks(x, names, rotation=20 if len(names) > 5 else 0)
    ax.set_ylim(0, 1.2)  # headroom for the legend
    ax.set_ylabel("score")
    ax.set_title("DCASE metrics per machine (pAUC at FPR <= 0.1)")
    ax.legend(ncols=5, fontsize="small", loc="upper center")
    return fig
