import numpy as np
import pytest

from asd.data import DEV_MACHINES, EVAL_MACHINES
from asd.synth_machines import SPECS

SR = 16_000


def test_every_dcase_machine_type_has_a_spec_with_both_domains():
    assert set(SPECS) == set(DEV_MACHINES) | set(EVAL_MACHINES)
    for spec in SPECS.values():
        assert spec.source and spec.target
        assert {op for _, op in spec.target}.isdisjoint(op for _, op in spec.source)


@pytest.mark.parametrize("machine", DEV_MACHINES)
def test_a_recipe_renders_normal_sound_at_rms_one_and_severity_changes_it(machine):
    t = np.arange(SR // 2) / SR
    op = np.ones((4, 1))
    render = SPECS[machine].render
    normal = render(np.random.default_rng(0), t, op, np.zeros((4, 1)), SR)
    anomalous = render(np.random.default_rng(0), t, op, np.ones((4, 1)), SR)
    assert normal.shape == (4, t.size) and np.isfinite(normal).all()
    np.testing.assert_allclose(np.sqrt(np.mean(normal**2, axis=-1)), 1.0, rtol=1e-6)
    assert not np.allclose(normal, anomalous)
