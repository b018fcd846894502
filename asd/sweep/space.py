"""Search spaces as YAML files keyed by the config's dotted keys, validated before any trial.

A space file::

    description: what this space is for
    base: paper                 # preset every trial starts from
    fixed:                      # settings all trials share
      train.epochs: 12
    params:                     # what the search samples
      loss.temperature: {loguniform: [0.02, 0.5]}
      train.batch_size: {choice: [32, 48, 64]}
      augment.n_views: {int: [2, 6]}          # inclusive
    sweep:                      # defaults for the run (flags override them)
      num_samples: 24
      max_concurrent_trials: 2
      grace_period: 2
      reduction_factor: 3
      cpus_per_trial: 4         # resources of one trial
      gpus_per_trial: 1
      workers_per_trial: 0      # data-parallel workers (0: one per GPU when a trial has > 1)
      validate_every: 0         # full evaluation every k epochs besides the last (0: last only)
      checkpoint_every: 5       # resumable checkpoint every k epochs besides the last
      tune_machines: [fan, valve]      # machine groups: what the search scores ...
      holdout_machines: [ToyCar]       # ... and what only the winner is scored on

Validation resolves every key against :class:`asd.config.Config`, rejects empty or
impossible ranges, and builds the config at every corner of the space (all lows/highs
combined), so a trial can never start with settings that fail later.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from asd.config import Config
from asd.errors import AsdError
from asd.presets import preset

if TYPE_CHECKING:
    from ray.tune.search.sample import Domain

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
TOP_KEYS = ("description", "base", "fixed", "params", "sweep")
SWEEP_KEYS = {
    "num_samples": int,
    "max_concurrent_trials": int,
    "grace_period": int,
    "reduction_factor": int,
    "cpus_per_trial": float,
    "gpus_per_trial": float,
    "workers_per_trial": int,
    "tune_machines": tuple,
    "holdout_machines": tuple,
    "validate_every": int,
    "checkpoint_every": int,
}
"""Run defaults a space may set in its ``sweep:`` section, with their types."""
ZERO_ALLOWED = (
    "gpus_per_trial",
    "workers_per_trial",
    "holdout_machines",
    "validate_every",
    "checkpoint_every",
)
"""Sweep keys for which 0 (or an empty list) is a meaningful value."""
SHIPPED_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
"""The spaces shipped beside the package, found by name (``--space default``)."""


@dataclass(frozen=True)
class Param:
    """One sampled setting: a distribution over values of a dotted config key."""

    key: str
    kind: str
    values: tuple[Any, ...]
    """(low, high) for uniform/loguniform/int, the options for choice."""

    def corners(self) -> tuple[Any, ...]:
        """The extreme values a trial may get: low and high, or every choice."""
        return self.values

    def to_tune(self) -> Domain:
        """The equivalent Ray Tune domain (imported here: the space itself needs no Ray)."""
        from ray import tune

        low, high = self.values[0], self.values[-1]
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        if self.kind == "int":
            return tune.randint(low, high + 1)  # Tune's upper bound is exclusive
        return tune.choice(list(self.values))


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: base config, shared overrides, sampled params, run defaults."""

    name: str
    base: Config
    params: tuple[Param, ...]
    description: str = ""
    sweep: dict[str, Any] = field(default_factory=dict)
    """Run defaults from the ``sweep:`` section (see ``SWEEP_KEYS``); flags override them."""

    def config_for(self, sampled: dict[str, Any]) -> Config:
        """The full config of a trial given its sampled values."""
        return self.base.with_overrides(sampled)

    def to_tune(self) -> dict[str, Any]:
        """Ray Tune param_space: dotted key -> domain."""
        return {p.key: p.to_tune() for p in self.params}

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial can run (ASHA's max_t)."""
        for p in self.params:
            if p.key == "train.epochs":
                return int(max(p.values))
        return self.base.train.epochs


def resolve_space(spec: str | Path) -> Path:
    """A space file: the path as given, else a shipped space by name (``default``, ``smoke``).

    Names work from any directory, so ``asd sweep --space default`` needs no checkout path.
    """
    path = Path(spec)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    shipped = SHIPPED_SPACES / f"{name}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED_SPACES.glob("*.yaml")))
    raise AsdError(f"search space {spec} does not exist (shipped spaces: {names or 'none'})")


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space file; AsdError naming the file and the key on any problem."""
    path = resolve_space(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AsdError(
            f"search space {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        raw = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        first = str(exc).replace("\n", " ")
        raise AsdError(f"search space {path} is not valid YAML: {first}") from None
    if raw is None:
        raise AsdError(f"search space {path} is empty")
    return parse_space(raw, name=path.stem, source=str(path))


def _unique_key_loader() -> type[yaml.SafeLoader]:
    """A SafeLoader that refuses duplicate keys (plain YAML keeps the last one silently)."""

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return dict(loader.construct_mapping(node, deep=deep))

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def parse_space(raw: dict[str, Any], name: str, source: str = "<space>") -> SearchSpace:
    """Validate a space given as a dict (what the YAML holds)."""
    if not isinstance(raw, dict):
        raise AsdError(f"{source}: a search space is a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        raise AsdError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(TOP_KEYS)})"
        )
    try:
        base = preset(str(raw.get("base", "paper")))
        fixed = raw.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise AsdError(f"fixed: needs a mapping of config keys to values, got {fixed!r}")
        base = base.with_overrides(dict(fixed))
    except AsdError as exc:
        raise AsdError(f"{source}: {exc}") from None
    raw_params = raw.get("params") or {}
    if not isinstance(raw_params, dict):
        raise AsdError(f"{source}: params: needs a mapping of config keys to distributions")
    params = tuple(_parse_param(key, spec, source) for key, spec in raw_params.items())
    sweep = _parse_sweep(raw.get("sweep") or {}, source)
    space = SearchSpace(
        name=name,
        base=base,
        params=params,
        description=str(raw.get("description", "")),
        sweep=sweep,
    )
    _check_corners(space, source)
    return space


def _parse_param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: params.{key}"
    defaults = Config().to_flat()
    if key not in defaults:
        known = ", ".join(k for k in defaults if k.startswith(key.partition(".")[0] + "."))
        raise AsdError(
            f"{where}: unknown config key '{key}'" + (f" (known: {known})" if known else "")
        )
    if not isinstance(spec, dict) or len(spec) != 1:
        raise AsdError(f"{where}: expected one of {{{', '.join(DISTRIBUTIONS)}: [...]}}")
    kind, values = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise AsdError(
            f"{where}: unknown distribution '{kind}' (known: {', '.join(DISTRIBUTIONS)})"
        )
    if not isinstance(values, list) or not values:
        raise AsdError(f"{where}: {kind} needs a non-empty list")
    if kind == "choice":
        return Param(key, kind, tuple(values))
    values = [_number(v) for v in values]  # YAML reads 1e-3 (no dot) as a string
    if len(values) != 2 or not all(_is_number(v) for v in values):
        raise AsdError(f"{where}: {kind} needs [low, high] numbers, got {values}")
    low, high = values
    if kind == "int" and not all(float(v).is_integer() for v in values):
        raise AsdError(f"{where}: int needs whole numbers, got {values}")
    if not low < high:
        raise AsdError(f"{where}: empty range [{low}, {high}] (low must be below high)")
    if kind == "loguniform" and low <= 0:
        raise AsdError(f"{where}: loguniform needs a positive low, got {low}")
    if kind == "int":
        return Param(key, kind, (int(low), int(high)))
    return Param(key, kind, (float(low), float(high)))


def _parse_sweep(raw: Any, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise AsdError(f"{source}: sweep must be a mapping")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in SWEEP_KEYS:
            raise AsdError(f"{source}: unknown key sweep.{key} (known: {', '.join(SWEEP_KEYS)})")
        out[key] = _sweep_value(key, value, f"{source}: sweep.{key}")
    return out


def _sweep_value(key: str, value: Any, where: str) -> Any:
    """One ``sweep:`` value checked against its type in SWEEP_KEYS."""
    kind = SWEEP_KEYS[key]
    low = 0 if key in ZERO_ALLOWED else 1
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise AsdError(f"{where} must be a list of machine types, got {value!r}")
        if len(value) < low:
            raise AsdError(f"{where} must name at least one machine type")
        return tuple(value)
    allowed = (int,) if kind is int else (int, float)
    whole = isinstance(value, allowed) and not isinstance(value, bool) and math.isfinite(value)
    if not whole or value < low or (kind is float and low and value <= 0):
        what = "integer" if kind is int else "number"
        sign = "a non-negative" if low == 0 else "a positive"
        raise AsdError(f"{where} must be {sign} {what}, got {value!r}")
    return kind(value)


def _check_corners(space: SearchSpace, source: str) -> None:
    """Every combination of extremes must be a valid config (catches min > max pairs)."""
    if not space.params:
        return
    combos = itertools.product(*(p.corners() for p in space.params))
    for combo in itertools.islice(combos, 4096):
        sampled = {p.key: v for p, v in zip(space.params, combo, strict=True)}
        try:
            space.config_for(sampled)
        except AsdError as exc:
            shown = ", ".join(f"{k}={v}" for k, v in sampled.items())
            raise AsdError(f"{source}: impossible combination ({shown}): {exc}") from None


def _number(value: Any) -> Any:
    """``"1e-3"`` -> 0.001; anything else unchanged (and rejected later if not a number)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
