"""The grammar of temporal pooling specs (``mean``, ``p90``, ``gwrp0.9``, ``mean+max``).

One parser for both sides: the config rejects a bad spec before any work starts, and
:mod:`asd.detect.pooling` computes the parts it returns.
"""

from __future__ import annotations

import re

from asd.errors import AsdError

_POOL_SIMPLE = ("mean", "std", "max", "min")
_POOL_ALIASES = {"meanstd": ("mean", "std"), "mean_std": ("mean", "std")}
_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)$")
_GWRP = re.compile(r"^gwrp(\d*(?:\.\d+)?)$")


def pooling_parts(spec: str) -> tuple[tuple[str, float], ...]:
    """The (kind, parameter) parts of a temporal pooling spec (:mod:`asd.detect.pooling`).

    Kinds: mean, std, max, min, percentile (``p90``), gwrp (``gwrp0.9``), twfr (decays per
    machine type, resolved by the pooling); ``meanstd`` is mean then std, ``+`` concatenates.
    AsdError names the part that does not parse.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AsdError(f"pooling spec must be a non-empty string, got {spec!r}")
    parts: list[tuple[str, float]] = []
    for token in (t.strip() for t in spec.strip().split("+")):
        if token == "twfr":
            parts.append(("twfr", 0.0))
        elif token in _POOL_SIMPLE:
            parts.append((token, 0.0))
        elif token in _POOL_ALIASES:
            parts += [(name, 0.0) for name in _POOL_ALIASES[token]]
        elif m := _PERCENTILE.match(token):
            q = float(m.group(1))
            if not 0 <= q <= 100:
                raise AsdError(f"pooling '{spec}': percentile {q} must be in [0, 100]")
            parts.append(("percentile", q))
        elif m := _GWRP.match(token):
            if not m.group(1):
                raise AsdError(f"pooling '{spec}': gwrp needs a decay, e.g. gwrp0.9")
            r = float(m.group(1))
            if not 0 <= r <= 1:
                raise AsdError(f"pooling '{spec}': gwrp decay {r} must be in [0, 1]")
            parts.append(("gwrp", r))
        else:
            raise AsdError(
                f"unknown pooling '{token}' in '{spec}' (known: mean, std, max, min, meanstd, "
                "p<q> e.g. p90, gwrp<r> e.g. gwrp0.9, twfr, and '+' to concatenate)"
            )
    return tuple(parts)


def pooling_error(spec: str) -> str:
    """Why ``spec`` is not a pooling spec, or ''."""
    try:
        pooling_parts(spec)
    except AsdError as err:
        return str(err)
    return ""
