import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from asd.config import Config
from asd.errors import AsdError
from asd.model.encoder import Encoder
from asd.model.margin import (
    ClassLabels,
    EncoderWithHead,
    MarginHead,
    adacos_scale,
    class_labels,
    make_head,
    margin_logits,
)


def index_rows():
    return pd.DataFrame(
        {
            "machine": ["fan", "fan", "valve", "fan", "valve", "fan"],
            "section": [0, 0, 0, 1, 0, 0],
            "attributes": [
                {"m-n": "W", "x": "1"},
                {"x": "1", "m-n": "W"},  # same values, other key order: same class
                {},
                {"m-n": "W", "x": "1"},  # other section: other class
                json.dumps({}),  # JSON text as in a CSV index
                {"m-n": "W", "x": "2"},
            ],
        }
    )


# --- labels from the index rows -----------------------------------------------------------


def test_one_class_per_machine_section_and_attribute_values():
    got = class_labels(index_rows())
    assert got.classes == (
        "fan/section_00/m-n=W,x=1",
        "fan/section_00/m-n=W,x=2",
        "fan/section_01/m-n=W,x=1",
        "valve/section_00/",
    )
    assert got.labels.tolist() == [0, 0, 3, 2, 3, 1]
    assert got.labels.dtype == np.int64


def test_labels_do_not_depend_on_row_order():
    rows = index_rows()
    shuffled = rows.iloc[[5, 2, 0, 4, 1, 3]]
    a, b = class_labels(rows), class_labels(shuffled)
    assert a.classes == b.classes
    assert a.labels[[5, 2, 0, 4, 1, 3]].tolist() == b.labels.tolist()


def test_index_without_attributes_is_refused():
    with pytest.raises(AsdError, match="attributes"):
        class_labels(pd.DataFrame({"machine": ["fan"], "section": [0]}))


# --- logits against a per-element formula ---------------------------------------------------


def slow_logits(x, centres, labels, scale, margin, k):
    """s * cos(theta + m [target]) per centre (ArcFace's fallback past pi - m), log-sum-exp
    per class, one element at a time."""
    n_classes = centres.shape[0] // k
    out = np.zeros((x.shape[0], n_classes))
    for b in range(x.shape[0]):
        for c in range(n_classes):
            terms = []
            for j in range(k):
                w = centres[c * k + j]
                cos = float(np.dot(x[b], w) / (np.linalg.norm(x[b]) * np.linalg.norm(w)))
                theta = math.acos(min(1.0, max(-1.0, cos)))
                if c != labels[b]:
                    terms.append(scale * cos)
                elif theta + margin < math.pi:
                    terms.append(scale * math.cos(theta + margin))
                else:
                    terms.append(scale * (cos - margin * math.sin(margin)))
            top = max(terms)
            out[b, c] = top + math.log(sum(math.exp(t - top) for t in terms))
    return out


@pytest.mark.parametrize("margin, k", [(0.0, 1), (0.5, 1), (0.2, 3), (0.0, 4), (1.2, 2)])
def test_margin_logits_match_the_formula(margin, k):
    g = torch.Generator().manual_seed(k)
    x, centres = torch.randn(5, 8, generator=g), torch.randn(4 * k, 8, generator=g)
    labels = torch.tensor([0, 3, 1, 1, 2])
    got = margin_logits(x, centres, labels, 30.0, margin, k)
    want = slow_logits(x.numpy(), centres.numpy(), labels.numpy(), 30.0, margin, k)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)


def test_margin_only_lowers_the_target_logit():
    g = torch.Generator().manual_seed(0)
    x, centres = torch.randn(6, 8, generator=g), torch.randn(3, 8, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    plain = margin_logits(x, centres, labels, 10.0, 0.0, 1)
    arc = margin_logits(x, centres, labels, 10.0, 0.3, 1)
    target = torch.nn.functional.one_hot(labels, 3).bool()
    torch.testing.assert_close(arc[~target], plain[~target])
    assert (arc[target] < plain[target]).all()


def test_target_logit_keeps_falling_past_pi_minus_margin():
    thetas = torch.linspace(0.01, math.pi - 0.01, 200)
    x = torch.stack([torch.cos(thetas), torch.sin(thetas)], dim=1)  # angle theta to (1, 0)
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = margin_logits(x, centres, torch.zeros(200, dtype=torch.long), 1.0, 1.0, 1)
    assert (logits[1:, 0] < logits[:-1, 0]).all()


def slow_adacos_scale(x, centres, labels, scale, k):
    """AdaCos's update (Zhang et al., 2019, eq. 15) one element at a time."""
    n_classes = centres.shape[0] // k
    b_sum, thetas = 0.0, []
    for b in range(x.shape[0]):
        best = -2.0
        for c in range(n_classes):
            for j in range(k):
                w = centres[c * k + j]
                cos = float(np.dot(x[b], w) / (np.linalg.norm(x[b]) * np.linalg.norm(w)))
                if c == labels[b]:
                    best = max(best, cos)
                else:
                    b_sum += math.exp(scale * cos)
        thetas.append(math.acos(best))
    b_avg = b_sum / x.shape[0]
    # torch's median of an even count is the lower middle value
    theta_med = sorted(thetas)[(len(thetas) - 1) // 2]
    return math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))


@pytest.mark.parametrize("k", [1, 2])
def test_adacos_scale_matches_the_formula(k):
    g = torch.Generator().manual_seed(3)
    x, centres = torch.randn(7, 8, generator=g), torch.randn(5 * k, 8, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    got = adacos_scale(x, centres, labels, 6.0, k)
    want = slow_adacos_scale(x.numpy(), centres.numpy(), labels.numpy(), 6.0, k)
    assert got == pytest.approx(want, rel=1e-5)


def test_adacos_starts_at_its_fixed_point_and_adapts_in_training_only():
    head = MarginHead(8, n_classes=5, kind="adacos", subclusters=2)
    assert float(head.scale) == pytest.approx(math.sqrt(2) * math.log(5 * 2 - 1))
    x, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    head.eval()
    head(x, y)
    assert float(head.scale) == pytest.approx(math.sqrt(2) * math.log(9))
    head.train()
    head(x, y)
    assert float(head.scale) != pytest.approx(math.sqrt(2) * math.log(9))


def test_arcface_loss_is_cross_entropy_of_its_logits_and_has_gradients():
    head = MarginHead(8, n_classes=3, kind="arcface", scale=16.0, margin=0.4).train()
    x = torch.randn(4, 8, requires_grad=True)
    y = torch.tensor([0, 2, 1, 1])
    loss = head(x, y)
    want = torch.nn.functional.cross_entropy(margin_logits(x, head.centres, y, 16.0, 0.4, 1), y)
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert x.grad is not None and head.centres.grad is not None
    assert float(head.scale) == 16.0  # ArcFace keeps its scale


def test_bad_head_settings_raise():
    with pytest.raises(AsdError, match="loss.aux_head"):
        MarginHead(8, 3, kind="softmax")
    with pytest.raises(AsdError, match="loss.aux_head"):
        Config().with_overrides({"loss.aux_head": "softmax"})
    with pytest.raises(AsdError, match="loss.aux_margin"):
        Config().with_overrides({"loss.aux_margin": -0.1})


# --- wiring into the encoder --------------------------------------------------------------


def small_config(**overrides):
    base = {"features.n_mels": 32, "encoder.width": 8, "encoder.embedding_dim": 16}
    return Config().with_overrides({**base, **overrides})


def test_make_head_is_none_for_the_paper_and_draws_nothing():
    cfg = small_config()
    labels = ClassLabels(np.array([0, 1, 0]), ("a", "b"))
    torch.manual_seed(0)
    enc = Encoder(cfg.encoder, 32)
    before = torch.random.get_rng_state()
    head, y = make_head(cfg, enc, labels, 3, torch.device("cpu"))
    assert head is None and y.numel() == 0 and enc.classes == ()
    assert torch.equal(torch.random.get_rng_state(), before)


def test_make_head_checks_labels_and_names_the_classes():
    cfg = small_config(**{"loss.aux_weight": 1.0, "loss.aux_subclusters": 2})
    enc = Encoder(cfg.encoder, 32)
    with pytest.raises(AsdError, match="needs class labels"):
        make_head(cfg, enc, None, 3, torch.device("cpu"))
    labels = ClassLabels(np.array([0, 1, 0]), ("a", "b"))
    with pytest.raises(AsdError, match="2 class labels for 3"):
        make_head(cfg, enc, ClassLabels(np.array([0, 1]), ("a", "b")), 3, torch.device("cpu"))
    head, y = make_head(cfg, enc, labels, 3, torch.device("cpu"))
    assert head is not None and head.centres.shape == (2 * 2, enc.backbone_dim)
    assert y.tolist() == [0, 1, 0] and enc.classes == ("a", "b")


def test_encoder_with_head_returns_the_projection_and_the_aux_loss():
    cfg = small_config(**{"loss.aux_weight": 1.0})
    enc = Encoder(cfg.encoder, 32).eval()
    head = MarginHead(enc.backbone_dim, 2)
    x, y = torch.randn(3, 32, 40) - 50, torch.tensor([0, 1, 1])
    with torch.no_grad():
        z, aux = EncoderWithHead(enc, head)(x, y)
        torch.testing.assert_close(z, enc(x))
        torch.testing.assert_close(aux, head(enc.backbone(x), y))


def test_head_computes_in_float32_under_bf16_autocast():
    head = MarginHead(8, n_classes=3, scale=30.0, margin=0.5).eval()
    x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        want = head(x, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = head(x.bfloat16(), y)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, head(x.bfloat16().float(), y))
    assert abs(got.item() - want.item()) < 0.5  # only the input's rounding differs
