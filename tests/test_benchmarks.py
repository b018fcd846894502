"""Smoke test of benchmarks/run.py at toy sizes: every core section yields rows and files.

No timing is asserted (the figures depend on the machine); only that the code runs, each
section returns numbers, and the table and JSON are written.
"""

import json
import math
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # spawned scale workers import benchmarks.run by this path

from benchmarks import run as bench_run  # noqa: E402
from benchmarks import sweep as bench_sweep  # noqa: E402

CORE = ["model", "step", "epoch", "features", "augment", "scoring", "scale"]


@pytest.mark.slow
def test_core_sections_at_toy_sizes(tmp_path, capsys):
    out = tmp_path / "bench"
    code = bench_run.main(
        ["--mode", "toy", "--device", "cpu", "--sections", ",".join(CORE), "--out", str(out)]
    )
    assert code == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = payload["rows"]
    assert not [r for r in rows if r["name"] == "error"], rows
    assert {r["section"] for r in rows} == set(CORE)
    for r in rows:
        assert r["value"] is None or math.isfinite(r["value"]), r
    assert payload["machine"]["cores"] >= 1
    assert any("sweep_h" in note for note in payload["notes"])
    text = out.with_suffix(".md").read_text()
    assert "| section | figure | value | unit | note |" in text
    assert text in capsys.readouterr().out


def test_unknown_section_is_rejected():
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--sections", "model,warp"])


def test_sweep_section_skips_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    bench = bench_run.Bench(
        device=bench_run.torch.device("cpu"),
        sizes=bench_run.sizes_for("toy", bench_run.torch.device("cpu")),
    )
    rows = bench_sweep.section(bench)
    assert [r.name for r in rows] == ["skipped"]


@pytest.mark.slow
def test_quality_reference_rows_and_missing_levers(tmp_path, capsys):
    from benchmarks import quality

    out = tmp_path / "quality"
    rows = "reference-mean,reference-meanstd,ens-meanstd+max"
    assert quality.main(["--size", "tiny", "--rows", rows, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (
        "tuned group: ToyCar, bearing, fan, slider, valve; held-out group: ToyTrain, gearbox"
        in text
    )
    line = next(x for x in text.splitlines() if x.startswith("| reference-mean |"))
    figures = [float(c) for c in line.split("|")[2:6]]  # tuned ml, elliptic; held-out ml, elliptic
    assert all(0 <= f <= 100 for f in figures)
    assert "| ens-meanstd+max |" in text and '"ToyTrain":' in text  # per-machine details
    assert list(out.glob("quality-tiny-*.md"))
    # A lever this asd does not know is reported as n/a with its key, never silently skipped.
    args = quality.parse_args(["--size", "tiny", "--out", str(out)])
    bench = quality.Bench(args)
    row = quality.Row("future", "encoder", "quick", {"encoder.no_such_lever": 1})
    result = quality.run_row(bench, row)
    assert result.missing == "n/a in this asd: encoder.no_such_lever" and not result.tuned


@pytest.mark.slow
def test_encoder_diagnostics_prints_reference_bands_and_untrained_vs_trained(tmp_path, capsys):
    from asd.data.synth.tree import synthesize
    from benchmarks import encoder_diagnostics

    data = synthesize(
        tmp_path / "data",
        machines=("fan",),
        train_source=6,
        train_target=2,
        test_per_domain=2,
        seconds=1.0,
    )
    argv = ["--data", str(data), "--workdir", str(tmp_path / "work"), "--bands", "4"]
    argv += ["--set", "train.epochs=1", "train.batch_size=4", "train.crop_frames=16"]
    argv += ["augment.n_views=1", "encoder.width=4", "--variant", "f8", "encoder.pool=freq"]
    assert encoder_diagnostics.main(argv + ["encoder.freq_bands=8"]) == 0
    out = capsys.readouterr().out
    for name, dims in [("reference in 4 bands", 4), ("f8, untrained", 256), ("f8, trained", 256)]:
        line = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[1]) == dims
        assert 0.0 <= float(cells[2]) <= 100.0  # an hmean in percent


def test_sweep_section_starts_its_own_ray_even_with_a_cluster_address_set(monkeypatch):
    import ray

    # RAY_ADDRESS (or a cluster left running) made ray.init refuse num_cpus: an error row
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert not ray.is_initialized()
    try:
        bench_sweep.start_ray()
        assert ray.cluster_resources().get("CPU") == os.cpu_count()
    finally:
        ray.shutdown()
