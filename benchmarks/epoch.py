"""3. One DCASE epoch projected: 7,000 clips x (1 + 6) views, plus the validation pass."""

from __future__ import annotations

from benchmarks import step
from benchmarks.harness import (
    DCASE_EVAL_CLIPS,
    DCASE_MACHINES,
    DCASE_TRAIN_CLIPS,
    PAPER_VIEWS,
    Bench,
    Row,
)
from benchmarks.model import measure_embed


def section(bench: Bench) -> list[Row]:
    """3. One DCASE epoch: 7,000 clips x (1 + 6) views, plus the validation embedding pass."""
    if "step_sps" not in bench.measured or "train_sps" not in bench.measured:
        step.section(bench)
    embed = bench.once("embed_cps", lambda: measure_embed(bench, bench.device))
    samples = DCASE_MACHINES * DCASE_TRAIN_CLIPS * (1 + PAPER_VIEWS)
    eval_clips = DCASE_MACHINES * DCASE_EVAL_CLIPS
    rows = []
    for key, label in (("step_sps", "make_batch + train_step"), ("train_sps", "train() epoch 2")):
        sps = bench.measured[key]
        rows.append(
            Row(
                "epoch",
                f"train epoch at {label} rate",
                samples / sps / 60,
                "min",
                f"{samples:,} samples / {sps:.0f} samples/s",
            )
        )
    rows.append(
        Row(
            "epoch",
            "validation embedding per epoch",
            eval_clips / embed / 60,
            "min",
            f"{eval_clips:,} clips / {embed:.0f} clips/s",
        )
    )
    t = bench.train_run
    if t is not None:
        scale = DCASE_MACHINES * DCASE_TRAIN_CLIPS / t["clips"]
        rows.append(
            Row(
                "epoch",
                f"measured train() epoch of {int(t['clips'])} clips",
                t["epoch2_s"],
                "s",
                f"x {scale:.0f} = {t['epoch2_s'] * scale / 60:.1f} min for 7,000 clips",
            )
        )
    return rows
