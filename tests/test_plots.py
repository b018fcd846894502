import io

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from asd.detect import plots  # noqa: E402
from asd.detect.metrics import METRICS, anomaly_labels, machine_table, official_score  # noqa: E402
from asd.errors import AsdError  # noqa: E402


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


def _pixels(path_or_buffer):
    from matplotlib.image import imread

    return imread(path_or_buffer, format="png")


def _rendered(fig):
    """The figure as :func:`plots._save` writes it (PNG at its dpi), as an RGBA array."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    buffer.seek(0)
    return _pixels(buffer)


def assert_saved_figure(path, fig):
    """The PNG at ``path`` is ``fig``, pixel for pixel: the file holds the plot the tests
    below check through the figure's data, drawn from the same arguments."""
    assert path.read_bytes()[:4] == b"\x89PNG"
    saved, expected = _pixels(path), _rendered(fig)
    assert saved.shape == expected.shape
    np.testing.assert_array_equal(saved, expected)


def test_roc_curves_file_is_the_roc_figure(results, tmp_path):
    path = plots.roc_curves(results, tmp_path / "roc.png")
    assert_saved_figure(path, plots.roc_figure(results))
    one_machine = plots.roc_curves(results[results["machine"] == "fan"], tmp_path / "fan.png")
    assert _pixels(one_machine).shape[1] < _pixels(path).shape[1]  # one panel, not three


def test_score_histograms_file_draws_the_threshold_it_is_given(results, tmp_path):
    by_machine = {"fan": 1.0}
    path = plots.score_histograms(results, tmp_path / "a" / "hist.png", threshold=by_machine)
    assert_saved_figure(path, plots.histogram_figure(results, threshold=by_machine))
    with_column = results.assign(threshold=0.8)
    column = plots.score_histograms(with_column, tmp_path / "hist2.png")
    assert_saved_figure(column, plots.histogram_figure(with_column))
    by_section = {("valve", 0): 0.5}
    section = plots.score_histograms(results, tmp_path / "hist3.png", threshold=by_section)
    assert_saved_figure(section, plots.histogram_figure(results, threshold=by_section))
    plain = _rendered(plots.histogram_figure(results))
    for drawn in (path, column, section):  # the threshold line is on the file
        assert not np.array_equal(_pixels(drawn), plain)


def test_machine_bars_file_is_the_bars_figure_with_its_overall_line(results, tmp_path):
    table = machine_table(results)
    overall = official_score(results)["hmean"]
    path = plots.machine_bars(table, tmp_path / "bars.png", overall=overall)
    assert_saved_figure(path, plots.bars_figure(table, overall=overall))
    indexed = plots.machine_bars(table.set_index("machine"), tmp_path / "bars2.png")
    assert_saved_figure(indexed, plots.bars_figure(table.set_index("machine")))
    low = plots.machine_bars(table, tmp_path / "bars3.png", overall=0.25)
    assert_saved_figure(low, plots.bars_figure(table, overall=0.25))
    assert not np.array_equal(_pixels(low), _pixels(path))  # the overall line moved


def test_figures_refuse_results_they_cannot_draw(results):
    with pytest.raises(AsdError, match="anomaly_score"):
        plots.roc_figure(results.drop(columns="anomaly_score"))
    with pytest.raises(AsdError, match="no rows"):
        plots.histogram_figure(results.iloc[:0])
    with pytest.raises(AsdError, match="pauc"):
        plots.bars_figure(machine_table(results).drop(columns="pauc"))


def _panels(fig):
    """Visible axes by title (one per machine)."""
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}


def test_roc_lines_are_sklearns_curves_of_each_domains_normals_against_all_anomalies(results):
    fig = plots.roc_figure(results)
    panels = _panels(fig)
    assert set(panels) == {"fan", "valve", "ToyCar"}
    table = machine_table(results).set_index("machine")
    for machine, ax in panels.items():
        part = results[results["machine"] == machine]
        y, s = anomaly_labels(part["label"]), part["anomaly_score"].to_numpy()
        lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
        for dom in ("source", "target"):
            keep = ((y == 0) & (part["domain"] == dom).to_numpy()) | (y == 1)
            fpr, tpr, _ = roc_curve(y[keep], s[keep])
            np.testing.assert_allclose(lines[dom].get_xdata(), fpr)
            np.testing.assert_allclose(lines[dom].get_ydata(), tpr)
            auc = roc_auc_score(y[keep], s[keep])
            assert lines[dom].get_label() == f"{dom} (AUC {auc:.3f})"
            assert auc == pytest.approx(table.loc[machine, f"auc_{dom}"])  # the metric's AUC


def test_a_domain_without_normals_draws_no_curve(results):
    no_target_normals = results[~((results["domain"] == "target") & (results["label"] == "normal"))]
    ax = _panels(plots.roc_figure(no_target_normals))["fan"]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("source") for label in labels)
    assert not any(label.startswith("target") for label in labels)


def _bar_heights(container):
    return np.array([patch.get_height() for patch in container.patches])


def test_histograms_count_each_class_and_draw_the_machines_threshold(results):
    fig = plots.histogram_figure(results, threshold={"fan": 1.0, ("valve", 0): 0.5})
    panels = _panels(fig)
    for machine, ax in panels.items():
        part = results[results["machine"] == machine]
        s = part["anomaly_score"].to_numpy()
        edges = np.histogram_bin_edges(s, bins=30)
        normal, anomaly = ax.containers
        assert [normal.patches[0].get_label(), anomaly.patches[0].get_label()] == [
            "normal",
            "anomaly",
        ]
        y = anomaly_labels(part["label"])
        np.testing.assert_array_equal(_bar_heights(normal), np.histogram(s[y == 0], edges)[0])
        np.testing.assert_array_equal(_bar_heights(anomaly), np.histogram(s[y == 1], edges)[0])
        assert _bar_heights(normal).sum() + _bar_heights(anomaly).sum() == len(part)

    def vlines(ax):
        return [line.get_xdata()[0] for line in ax.get_lines()]

    assert vlines(panels["fan"]) == [1.0]
    assert vlines(panels["valve"]) == [0.5]
    assert vlines(panels["ToyCar"]) == []  # no threshold given for it
    column = plots.histogram_figure(results.assign(threshold=np.where(results.index % 2, 0.7, 0.9)))
    assert sorted(vlines(_panels(column)["fan"])) == [0.7, 0.9]


def test_bars_are_the_tables_values_and_the_line_is_the_overall_score(results):
    table = machine_table(results)
    overall = official_score(results)["hmean"]
    ax = plots.bars_figure(table, overall=overall).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table["machine"])
    containers = {c.get_label(): c for c in ax.containers}
    assert list(containers) == list(METRICS)
    for metric in METRICS:
        np.testing.assert_allclose(_bar_heights(containers[metric]), table[metric])
    lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["hmean"].get_ydata(), table["hmean"])
    assert lines["overall"].get_ydata()[0] == pytest.approx(overall)
    # without an overall score: the harmonic mean of the table's three metric columns
    plain = plots.bars_figure(table.set_index("machine")).axes[0]
    line = next(x for x in plain.get_lines() if x.get_label().startswith("overall"))
    values = table[list(METRICS)].to_numpy().ravel()
    assert line.get_ydata()[0] == pytest.approx(len(values) / (1.0 / values).sum())
