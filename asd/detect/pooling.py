"""Temporal pooling: a clip's frames (d, T) become one vector; the choice decides what is seen.

A clip mean hides a 100 ms event in a 10 s clip; a per-band maximum keeps it but ignores a
steady shift of the whole spectrum. Real DCASE valve: mean 48 %, max 81 % (same scorer); on
stationary machines the order reverses. So the pooling is a searchable setting, written as a
short spec:

- ``mean``, ``std``, ``max``, ``min``: per row over time;
- ``meanstd``: mean then std (``mean_std`` is accepted for older configs);
- ``p<q>``: the ``q``-th percentile over time (``p90``; linear interpolation, as numpy);
- ``gwrp<r>``: global weighted rank pooling (TWFR-GMM, Guan et al. 2023): each row's values
  sorted from high to low, weighted ``r**i`` and normalised, so ``r = 1`` is the mean and
  ``r = 0`` the max (``gwrp0.9``);
- ``twfr``: GWRP with the decay TWFR-GMM's authors chose per machine type on the DCASE 2022
  dev set (:data:`TWFR_DECAYS`; tuned on test labels, so a comparison point, not a first-shot
  setting); other machine types get the table's median;
- ``a+b``: the concatenation of several of these (``mean+max``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asd.errors import AsdError
from asd.pooling_spec import pooling_parts

TWFR_DECAYS = {
    "ToyCar": 1.00,
    "ToyTrain": 0.90,
    "bearing": 1.00,
    "fan": 1.00,
    "gearbox": 0.98,
    "slider": 0.88,
    "valve": 0.46,
}
"""GWRP decays per machine type published with TWFR-GMM (``config.yaml``, version twfr-gmm)."""
TWFR_DEFAULT = float(sorted(TWFR_DECAYS.values())[len(TWFR_DECAYS) // 2])
"""The decay ``twfr`` gives a machine type the table does not know (its median)."""


@dataclass(frozen=True)
class Pooling:
    """A parsed pooling spec: its parts, each (kind, parameter)."""

    spec: str
    parts: tuple[tuple[str, float], ...]

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """(..., d, T) frames -> (..., d * len(parts)) pooled vector(s)."""
        return np.concatenate([_pool_part(frames, kind, p) for kind, p in self.parts], axis=-1)

    def width(self, d: int) -> int:
        """Size of the pooled vector of ``d``-row frames."""
        return d * len(self.parts)


def per_machine(spec: str) -> bool:
    """Whether the pooling depends on the clip's machine type (``twfr``)."""
    return "twfr" in [t.strip() for t in spec.split("+")]


def parse_pooling(spec: str, machine: str | None = None) -> Pooling:
    """The :class:`Pooling` a spec names; AsdError naming the bad part otherwise.

    The grammar is :func:`asd.pooling_spec.pooling_parts` (the config validates specs with it);
    ``machine`` resolves ``twfr`` to that machine type's decay (the median without one).
    """
    parts = tuple(
        ("gwrp", TWFR_DECAYS.get(machine or "", TWFR_DEFAULT)) if kind == "twfr" else (kind, p)
        for kind, p in pooling_parts(spec)
    )
    return Pooling(spec.strip(), parts)


def gwrp_weights(frames: int, decay: float) -> np.ndarray:
    """(T,) normalised weights ``r**i / sum(r**i)`` of the values ranked from high to low."""
    weights = np.power(float(decay), np.arange(frames, dtype=np.float64))  # 0**0 = 1: max
    return weights / weights.sum()


def _pool_part(frames: np.ndarray, kind: str, param: float) -> np.ndarray:
    """(..., d, T) -> (..., d) for one part of a spec."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] == 0:
        raise AsdError(f"pooling needs (..., d, T) frames with T >= 1, got shape {x.shape}")
    if kind == "mean":
        return x.mean(axis=-1)
    if kind == "std":
        return x.std(axis=-1)
    if kind == "max":
        return x.max(axis=-1)
    if kind == "min":
        return x.min(axis=-1)
    if kind == "percentile":
        return np.percentile(x, param, axis=-1)
    ranked = -np.sort(-x, axis=-1)  # (..., d, T) high to low
    return ranked @ gwrp_weights(x.shape[-1], param)  # (..., d)
