"""Why does the learned encoder lose to the clip-mean log-mel? Issue 9's diagnostics, one table.

Rows (official hmean per estimator, same data, same split, same scorers as ``asd evaluate``):

- the reference, the clip-mean log-mel, and the same spectrum averaged into fewer frequency
  bands (how much spectral resolution the scorer needs on this data);
- for each encoder variant (``--variant NAME KEY=VALUE ...``, on top of ``--set``): the
  network untrained (its random weights, BatchNorm statistics recomputed on the normal
  training clips) and trained; the difference is what training adds.

    python benchmarks/encoder_diagnostics.py --data asd-work/synth \\
        --set train.epochs=15 train.crop_frames=64 train.lr=0.001 encoder.width=8 \\
        --variant paper-shaped --variant freq16 encoder.freq_stride=1 encoder.pool=freq \\
        encoder.freq_bands=16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from asd.config import Config
from asd.data.index import index_dataset, normal_train_mask
from asd.detect.frames import logmel_pooled
from asd.detect.pipeline import evaluate_embeddings, train_encoder
from asd.features import FeatureSet, extract_features
from asd.model.embed import embed_clips
from asd.model.encoder import Encoder


def clip_mean(features: FeatureSet) -> np.ndarray:
    """(N, n_mels): each clip's mean log-mel over time, the untrained reference."""
    return logmel_pooled(features, ["mean"])["mean"]


def band_means(features: FeatureSet, bands: int) -> np.ndarray:
    """(N, bands): each clip's mean log-mel averaged into ``bands`` equal groups of mels."""
    mean = clip_mean(features)  # (N, n_mels)
    groups = np.array_split(np.arange(mean.shape[1]), bands)
    return np.stack([mean[:, g].mean(axis=1) for g in groups], axis=1)


def untrained(cfg: Config, features: FeatureSet) -> Encoder:
    """Random weights (train.seed) with BN statistics of the full normal training clips."""
    torch.manual_seed(cfg.train.seed)
    enc = Encoder(cfg.encoder, cfg.features.n_mels)
    enc.set_normalization(features.mean, features.std)
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the pass below
    rows = np.flatnonzero(normal_train_mask(features.index))
    enc.train()
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            mel, _ = features.padded(rows[i : i + 32])  # padding: a few frames of floor
            enc.backbone(torch.from_numpy(mel))
    return enc.eval()


def row(name: str, embeddings: np.ndarray, features: FeatureSet, seconds: float) -> str:
    """One markdown row: hmean per estimator and AUCs of ``ml``."""
    ev = evaluate_embeddings(embeddings, features.index, Config())
    ml, el = ev.by_estimator["ml"].summary, ev.by_estimator["elliptic"].summary
    return (
        f"| {name} | {embeddings.shape[1]} | {100 * ml['hmean']:.1f} | {100 * el['hmean']:.1f} "
        f"| {100 * ml['auc_source']:.1f} | {100 * ml['auc_target']:.1f} | {100 * ml['pauc']:.1f} "
        f"| {seconds:.0f} |"
    )


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}`` (Config coerces the types)."""
    bad = [p for p in pairs if "=" not in p]
    if bad:
        sys.exit(f"encoder_diagnostics: expected KEY=VALUE, got {bad[0]}")
    return dict(p.split("=", 1) for p in pairs)


def main(argv: list[str] | None = None) -> int:
    """Print the table; one line of progress per row on stderr."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder holding dev_data/")
    ap.add_argument("--workdir", type=Path, default=Path("asd-work"), help="feature cache")
    ap.add_argument("--set", nargs="*", default=[], help="KEY=VALUE for every variant")
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=V")
    ap.add_argument("--bands", default="4,8,16,32", help="band counts of the reference rows")
    args = ap.parse_args(argv)
    base = Config().with_overrides(parse_pairs(args.set))
    index = index_dataset(args.data)
    features = extract_features(index, base.features, args.workdir / "features", progress=False)
    lines = [
        f"data {args.data}: {len(features)} clips, {torch.get_num_threads()} torch threads",
        "",
        "| row | dims | ml hmean | elliptic hmean | ml AUC src | ml AUC tgt | ml pAUC | s |",
        "|---|---|---|---|---|---|---|---|",
        row("reference (clip-mean log-mel)", clip_mean(features), features, 0),
    ]
    for bands in (int(b) for b in args.bands.split(",")):
        lines.append(row(f"reference in {bands} bands", band_means(features, bands), features, 0))
        print(lines[-1], file=sys.stderr, flush=True)
    for name, *pairs in args.variant or [["base"]]:
        cfg = base.with_overrides(parse_pairs(pairs))
        emb = embed_clips(untrained(cfg, features), features, device="cpu")
        lines.append(row(f"{name}, untrained", emb, features, 0))
        print(lines[-1], file=sys.stderr, flush=True)
        start = time.monotonic()
        result = train_encoder(cfg, features, device="cpu", progress=False)
        emb = embed_clips(result.encoder, features, device="cpu")
        lines.append(row(f"{name}, trained", emb, features, time.monotonic() - start))
        print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
