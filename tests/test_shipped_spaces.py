"""Every shipped search space, shrunk by a fixture and run as a smoke sweep (slow).

The shrunk space keeps the space's base preset and every searched key (only sizes shrink:
one epoch, tiny batches, 32 mels, a narrow network), so a space whose keys or ranges stopped
resolving, or whose sampled detectors fail to train, score or register, fails here.
"""

from pathlib import Path

import pytest
import yaml
from conftest import SHIPPED_SPACES
from test_sweep import _client, _runs

pytestmark = pytest.mark.slow

SPACES = sorted(p.stem for p in SHIPPED_SPACES.glob("*.yaml"))


def test_the_shipped_spaces_are_the_ones_documented():
    assert {"smoke", "default", "paper"} <= set(SPACES)


@pytest.fixture(scope="module")
def tiny_data(synth_tree):
    return synth_tree(machines=("fan", "valve"), train_source=8, test_per_domain=3, seed=5)


@pytest.mark.parametrize("name", SPACES)
def test_a_shrunk_shipped_space_runs_end_to_end(name, shrunk_space, tiny_data, tmp_path):
    from asd.sweep.runner import run_sweep
    from asd.sweep.settings import SweepSettings
    from asd.sweep.space import load_space

    shipped = yaml.safe_load((SHIPPED_SPACES / f"{name}.yaml").read_text())
    path = shrunk_space(name)
    space = load_space(path)
    searched = list(shipped.get("params") or {})
    assert [p.key for p in space.params] == searched, "every searched key is kept"
    assert space.base.train.epochs == 1 and space.base.features.n_mels == 32
    settings = SweepSettings(
        space=path,
        data=tiny_data,
        workdir=tmp_path / "work",
        name=f"shrunk-{name}",
        holdout_machines=("valve",),
        promote=True,
    )
    result = run_sweep(settings)

    trials = space.sweep["num_samples"]
    assert len(result.summary) == trials
    assert list(result.summary["status"]) == ["finished"] * trials, result.summary["error"]
    client, _ = _client(settings.workdir)
    parent, children = _runs(client, settings.name)
    assert len(children) == trials
    for child in children:
        assert child.info.status == "FINISHED"
        assert set(searched) <= set(child.data.params), "each trial logs what it sampled"
        assert 0.0 <= child.data.metrics[f"{child.data.params['scoring.estimator']}.hmean"] <= 1
    assert 0.0 <= result.holdout_scores[f"{result.scorer}.hmean"] <= 1.0
    detector = client.get_model_version_by_alias("asd-detector", "champion")
    assert str(detector.version) == result.detector_version
    assert detector.tags["sweep_id"] == settings.name
    if result.family != "reference" and result.model_version is not None:
        encoder = client.get_model_version_by_alias(settings.model_name, "champion")
        assert str(encoder.version) == result.model_version
    local = client.download_artifacts(parent.info.run_id, "provenance/space.yaml", str(tmp_path))
    assert Path(local).read_text() == path.read_text()
