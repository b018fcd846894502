import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from asd.detect import plots  # noqa: E402
from asd.detect.metrics import machine_table, official_score  # noqa: E402


@pytest.fixture
def results():
    rng = np.random.default_rng(0)
    frames = []
    for machine in ("fan", "valve", "ToyCar"):
        n = 40
        label = np.repeat(["normal", "anomaly"], n // 2)
        frames.append(
            pd.DataFrame(
                {
                    "machine": machine,
                    "section": 0,
                    "domain": np.tile(["source", "target"], n // 2),
                    "label": label,
                    "anomaly_score": rng.normal(size=n) + (label == "anomaly") * 1.5,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def is_png(path):
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"


def test_roc_curves(results, tmp_path):
    assert is_png(plots.roc_curves(results, tmp_path / "roc.png"))


def test_score_histograms_with_threshold_dict_or_column(results, tmp_path):
    path = plots.score_histograms(results, tmp_path / "a" / "hist.png", threshold={"fan": 1.0})
    assert is_png(path)
    with_column = results.assign(threshold=0.8)
    assert is_png(plots.score_histograms(with_column, tmp_path / "hist2.png"))
    by_section = {("valve", 0): 0.5}
    assert is_png(plots.score_histograms(results, tmp_path / "hist3.png", threshold=by_section))


def test_machine_bars(results, tmp_path):
    table = machine_table(results)
    overall = official_score(results)["hmean"]
    assert is_png(plots.machine_bars(table, tmp_path / "bars.png", overall=overall))
    assert is_png(plots.machine_bars(table.set_index("machine"), tmp_path / "bars2.png"))
