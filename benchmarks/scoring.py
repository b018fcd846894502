"""6. Scoring: fit and score with both estimators; ``elliptic`` at DCASE size against
scikit-learn's EllipticEnvelope."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.covariance import EllipticEnvelope

from asd.detect.mahalanobis import MahalanobisScorer
from asd.detect.mcd import FastEllipticEnvelope
from benchmarks.harness import DCASE_MACHINES, Bench, Row


def scoring_data(machines: list[str], per: int, d: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Correlated Gaussian embeddings (per * machines, d); 1% of each machine's are 'target'."""
    rng = np.random.default_rng(0)
    parts = []
    for _ in machines:
        mixing = rng.standard_normal((d, d)) / math.sqrt(d)
        parts.append(rng.standard_normal((per, d)) @ mixing + rng.standard_normal(d))
    domain = np.where(np.arange(per) % 100 == 0, "target", "source")
    meta = pd.DataFrame(
        {
            "machine": np.repeat(machines, per),
            "section": 0,
            "domain": np.tile(domain, len(machines)),
        }
    )
    return np.concatenate(parts), meta


def section(bench: Bench) -> list[Row]:
    """6. Fit and score N embeddings (7 machine types, 1 section) with both estimators."""
    s = bench.sizes
    machines = [f"m{i}" for i in range(DCASE_MACHINES)]
    rows = []
    for estimator, clips in (("ml", s.scoring_clips), ("elliptic", s.elliptic_clips)):
        emb, meta = scoring_data(machines, clips // len(machines), s.scoring_dim)
        per, (n, d) = clips // len(machines), emb.shape
        if estimator == "ml":  # warm-up: SciPy/scikit-learn's first call pays ~2 s of setup
            MahalanobisScorer(estimator="ml").fit(emb[:per], meta.iloc[:per])
        start = time.perf_counter()
        scorer = MahalanobisScorer(estimator=estimator).fit(emb, meta)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scorer.score_samples(emb, meta)
        score_s = time.perf_counter() - start
        note = f"{n:,} x {d} embeddings, {len(machines)} machine types ({per} each)"
        rows += [
            Row("scoring", f"{estimator}: fit", fit_s, "s", note),
            Row("scoring", f"{estimator}: score", score_s, "s", f"{n:,} clips"),
        ]
    return rows + dcase_elliptic_rows(bench)


def dcase_elliptic_rows(bench: Bench) -> list[Row]:
    """``elliptic`` at DCASE size (7 sections x 1,000 clips x 512): asd's FastMCD for all
    sections, scikit-learn's EllipticEnvelope on the first ``sklearn_mcd_sections`` (minutes
    each) scaled to all, and how well the two agree on that section."""
    s = bench.sizes
    machines = [f"m{i}" for i in range(s.mcd_sections)]
    emb, meta = scoring_data(machines, s.mcd_clips, s.mcd_dim)
    size = f"{s.mcd_sections} x {s.mcd_clips:,} x {s.mcd_dim}"
    start = time.perf_counter()
    MahalanobisScorer(estimator="elliptic").fit(emb, meta)
    fast_s = bench.measured["elliptic_fit_s"] = time.perf_counter() - start
    rows = [
        Row(
            "scoring",
            f"elliptic fit {size}: asd FastMCD",
            fast_s,
            "s",
            f"MahalanobisScorer('elliptic') on all {s.mcd_sections} sections; target <= 60 s",
        )
    ]
    if s.sklearn_mcd_sections < 1:
        return rows
    ref_s, fast_one, rho = 0.0, 0.0, []
    for k in range(s.sklearn_mcd_sections):
        rows_k = meta["machine"].to_numpy() == machines[k]
        z = emb[rows_k] - np.median(emb[rows_k], axis=0)  # the scorer's source-domain centring
        start = time.perf_counter()
        ref = EllipticEnvelope(random_state=0).fit(z)
        ref_s += time.perf_counter() - start
        start = time.perf_counter()
        fast = FastEllipticEnvelope(random_state=0).fit(z)
        fast_one += time.perf_counter() - start
        rho.append(spearmanr(fast.mahalanobis(z), ref.mahalanobis(z)).statistic)
    k = s.sklearn_mcd_sections
    scale = s.mcd_sections / k
    rows += [
        Row(
            "scoring",
            f"elliptic fit {size}: scikit-learn EllipticEnvelope",
            ref_s * scale,
            "s",
            f"{ref_s / k:.1f} s per section measured on {k}, x {scale:g} sections "
            f"(asd: {fast_one / k:.1f} s on the same section{'s' if k > 1 else ''})",
        ),
        Row(
            "scoring",
            "  asd vs scikit-learn Mahalanobis rank correlation",
            float(np.mean(rho)),
            "Spearman",
            f"on the training clips of {k} section(s)",
        ),
    ]
    return rows
