"""Margin-based softmax heads on the name labels: the auxiliary task beside NT-Xent.

The strongest DCASE systems since 2020 learn their embedding by classifying what the file
names say (machine type, section, attribute values) with an angular-margin softmax, then
score anomalies by distance in that embedding. Here the head sits on the backbone vector
and its cross-entropy is added to NT-Xent with weight ``loss.aux_weight`` (0 = the paper).

Two heads, one shape: each class has ``K`` sub-cluster centres on the unit sphere
(Wilkinghoff's sub-cluster AdaCos; ``K = 1`` is the plain head), a centre's logit is
``s * cos(theta)``, and a class logit is the log-sum-exp over its centres, so cross-entropy
over classes is the loss of the sub-cluster softmax.

- ArcFace (Deng et al., 2019): the target class's centres get the additive angular margin,
  ``s * cos(theta + m)``, with a fixed scale ``s``.
- AdaCos (Zhang et al., 2019): no margin; ``s`` starts at ``sqrt(2) log(C K - 1)`` and after
  every training batch becomes ``log(B_avg) / cos(min(pi/4, theta_med))``, where ``B_avg``
  is the batch mean of the summed non-target ``exp(s cos)`` and ``theta_med`` the median
  angle to the target class.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asd.config import AUX_HEADS, Config
from asd.errors import AsdError
from asd.model.encoder import Encoder


@dataclass(frozen=True)
class ClassLabels:
    """One integer class per clip and the name of each class (what checkpoints carry)."""

    labels: np.ndarray
    """(N,) int64 class of each clip, in index order."""
    classes: tuple[str, ...]
    """Class names, sorted: ``machine/section_NN/key=value,...``."""


def class_name(machine: str, section: int, attributes: dict[str, str]) -> str:
    """The class of one clip: machine type, section and every attribute value."""
    attrs = ",".join(f"{k}={attributes[k]}" for k in sorted(attributes))
    return f"{machine}/section_{int(section):02d}/{attrs}"


def class_labels(index: pd.DataFrame) -> ClassLabels:
    """One class per distinct (machine, section, attributes) combination of ``index`` rows.

    ``attributes`` may be dicts (from :func:`asd.data.index.index_dataset`) or their JSON text.
    Classes are sorted by name, so the same clips give the same labels in any row order.
    """
    missing = {"machine", "section", "attributes"} - set(index.columns)
    if missing:
        raise AsdError(f"the clip index lacks {', '.join(sorted(missing))} for class labels")
    names = [
        class_name(m, s, json.loads(a) if isinstance(a, str) else dict(a or {}))
        for m, s, a in zip(index["machine"], index["section"], index["attributes"], strict=True)
    ]
    classes = tuple(sorted(set(names)))
    lookup = {name: i for i, name in enumerate(classes)}
    return ClassLabels(np.array([lookup[n] for n in names], dtype=np.int64), classes)


def margin_logits(
    x: Tensor, centres: Tensor, labels: Tensor, scale: float, margin: float, subclusters: int
) -> Tensor:
    """Class logits of the sub-cluster margin softmax.

    x (B, d), centres (C*K, d) with class ``c`` owning rows ``c*K .. c*K+K-1``, labels (B,)
    -> (B, C): ``logsumexp_k s * cos(theta_ck + m [c == label])`` (for theta + m >= pi the
    target term is ``cos(theta) - m sin(m)``, as in ArcFace).
    """
    cos = F.normalize(x.float(), dim=1) @ F.normalize(centres.float(), dim=1).T  # (B, C*K)
    cos = cos.view(x.shape[0], -1, subclusters)  # (B, C, K)
    if margin != 0.0:
        # clamp keeps acos differentiable at |cos| = 1
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        # past theta = pi - m, cos(theta + m) would rise again: ArcFace's linear fallback
        # keeps the target logit falling as the angle grows
        shifted = torch.where(
            theta + margin < math.pi, torch.cos(theta + margin), cos - margin * math.sin(margin)
        )
        target = F.one_hot(labels, cos.shape[1]).bool()[:, :, None]  # (B, C, 1)
        cos = torch.where(target, shifted, cos)
    return torch.logsumexp(scale * cos, dim=2)  # (B, C)


def adacos_scale(
    x: Tensor, centres: Tensor, labels: Tensor, scale: float, subclusters: int
) -> float:
    """AdaCos's next scale from one batch (no gradient): ``log(B_avg) / cos(min(pi/4, θ_med))``.

    ``B_avg`` sums ``exp(s cos)`` over the centres of the other classes; ``θ_med`` is the
    median angle between a clip and the nearest centre of its own class.
    """
    with torch.no_grad():
        cos = F.normalize(x.float(), dim=1) @ F.normalize(centres.float(), dim=1).T
        cos = cos.view(x.shape[0], -1, subclusters)  # (B, C, K)
        target = F.one_hot(labels, cos.shape[1]).bool()  # (B, C)
        others = torch.exp(scale * cos).sum(dim=2).masked_fill(target, 0.0).sum(dim=1)  # (B,)
        b_avg = float(others.mean())
        theta = torch.acos(cos[target].max(dim=1).values.clamp(-1.0, 1.0))  # (B,)
        theta_med = float(theta.median())
    if b_avg <= 0.0 or not math.isfinite(b_avg):
        return scale  # a single class has no negatives: keep the scale
    return math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))


class MarginHead(nn.Module):
    """Sub-cluster centres and the margin softmax loss over them (ArcFace or AdaCos)."""

    scale: Tensor

    def __init__(
        self,
        dim: int,
        n_classes: int,
        kind: str = "arcface",
        scale: float = 30.0,
        margin: float = 0.5,
        subclusters: int = 1,
    ) -> None:
        super().__init__()
        if kind not in AUX_HEADS:
            raise AsdError(f"loss.aux_head must be one of {', '.join(AUX_HEADS)}, got '{kind}'")
        if n_classes < 1 or subclusters < 1:
            raise AsdError("a margin head needs at least one class and one sub-cluster")
        self.kind, self.margin, self.subclusters = kind, margin, subclusters
        self.centres = nn.Parameter(torch.empty(n_classes * subclusters, dim))
        nn.init.xavier_uniform_(self.centres)
        start = math.sqrt(2) * math.log(max(n_classes * subclusters - 1, 2))
        # a buffer: AdaCos's scale moves with training and must resume with the checkpoint
        self.register_buffer("scale", torch.tensor(scale if kind == "arcface" else start))

    def logits(self, x: Tensor, labels: Tensor) -> Tensor:
        """(B, d), (B,) -> (B, C) class logits (the margin only applies for ArcFace)."""
        margin = self.margin if self.kind == "arcface" else 0.0
        return margin_logits(x, self.centres, labels, float(self.scale), margin, self.subclusters)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the margin softmax; AdaCos updates its scale in training mode."""
        # float32 even under bf16 autocast: acos near |cos| = 1 and a scale of 30 need it
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            if self.kind == "adacos" and self.training:
                new = adacos_scale(x, self.centres, labels, float(self.scale), self.subclusters)
                self.scale.fill_(new)
            return F.cross_entropy(self.logits(x, labels), labels)


class EncoderWithHead(nn.Module):
    """The encoder and its margin head as one module, so data parallel syncs both."""

    def __init__(self, encoder: Encoder, head: MarginHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, n_mels, T) dB, (B,) -> the (B, D) projection and the head's loss."""
        h = self.encoder.backbone(x)  # (B, backbone_dim): what scoring embeds
        return self.encoder.head(h), self.head(h, labels)


def make_head(
    cfg: Config, encoder: Encoder, labels: ClassLabels | None, n_clips: int, device: torch.device
) -> tuple[MarginHead | None, Tensor]:
    """The head ``cfg.loss`` asks for (None when ``loss.aux_weight`` is 0), labels on ``device``.

    The encoder keeps the class names. Only with a head are parameters created, so the
    paper's run draws the same random numbers.
    """
    loss = cfg.loss
    if loss.aux_weight == 0:
        return None, torch.zeros(0, dtype=torch.long)
    if labels is None:
        raise AsdError("loss.aux_weight > 0 needs class labels of the training clips")
    if len(labels.labels) != n_clips:
        raise AsdError(f"{len(labels.labels)} class labels for {n_clips} training clips")
    encoder.classes = labels.classes
    head = MarginHead(
        encoder.backbone_dim,
        len(labels.classes),
        kind=loss.aux_head,
        scale=loss.aux_scale,
        margin=loss.aux_margin,
        subclusters=loss.aux_subclusters,
    )
    return head.to(device), torch.as_tensor(labels.labels, dtype=torch.long, device=device)
