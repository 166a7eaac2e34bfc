"""Hydra's sweep grammar -> Optuna distributions, with conditional parameters.

A sweep's ``params`` maps an override path (``regularizer.p``, ``optim.lr``, or a config group such
as ``regularizer``) to a sweep expression parsed by Hydra's own override parser:

    choice(a, b, c)              -> CategoricalDistribution
    range(start, stop[, step])   -> Int/FloatDistribution over Python's range: stop is exclusive,
                                    so the high end is the last value the range yields
    interval(low, high)          -> FloatDistribution(low, high)
    tag(log, interval(...))      -> log scale;  tag(int, interval(...)) -> IntDistribution

A value may instead be ``{values: <expression>, when: {<param>: [choices]}}``: the parameter is
suggested only when the other (categorical) parameter took one of those choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from .errors import ConfigError


@dataclass
class SearchParam:
    name: str
    text: str
    distribution: BaseDistribution
    when: dict[str, list] | None = None

    def applies(self, chosen: dict[str, Any]) -> bool:
        return not self.when or all(chosen.get(k) in v for k, v in self.when.items())


def to_distribution(name: str, text: str) -> BaseDistribution:
    field = f"sweep.params.{name}"
    try:
        override = OverridesParser.create().parse_overrides([f"{name}={text}"])[0]
    except Exception as exc:
        raise ConfigError(field, text, f"malformed sweep expression: {str(exc).splitlines()[0]}") from None
    if not override.is_sweep_override():
        raise ConfigError(field, text, "must be a sweep: choice(...), range(...), interval(...), tag(log, interval(...))")
    value: Any = override.value()  # a ChoiceSweep, RangeSweep or IntervalSweep (Optional fields in Hydra's types)
    tags = set(value.tags)
    unknown = tags - {"log", "int"}
    if unknown:
        raise ConfigError(field, text, f"unknown tag(s) {sorted(unknown)}; allowed tags: log, int")
    log = "log" in tags
    if isinstance(value, ChoiceSweep):
        choices: list[Any] = list(value.list)
        if not choices or any(isinstance(c, (list, dict)) for c in choices):
            raise ConfigError(field, text, "choice() needs one or more scalar values")
        twice = [c for i, c in enumerate(choices) if c in choices[:i]]
        if twice:  # it weighted that value double in random/TPE, and the grid sampler trained it twice
            raise ConfigError(field, text, f"choice() lists {twice[0]!r} more than once; list each value once")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start: Any = value.start
        stop: Any = value.stop
        step: Any = value.step
        if step <= 0 or stop <= start:
            raise ConfigError(field, text, "range(start, stop, step) needs step > 0 and stop > start")
        values = list(value.range())  # Hydra's own expansion: stop is exclusive
        high = values[-1]  # so the distribution's high end is the last value the range yields
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(start, high, step=step)
        return FloatDistribution(float(start), float(high), step=float(step))
    if isinstance(value, IntervalSweep):
        low: Any = value.start
        end: Any = value.end
        if not low < end:
            raise ConfigError(field, text, "interval(low, high) needs low < high")
        if log and low <= 0:
            raise ConfigError(field, text, "a log-scale interval needs low > 0")
        if "int" in tags:
            return IntDistribution(int(low), int(end), log=log)
        return FloatDistribution(float(low), float(end), log=log)
    raise ConfigError(field, text, "unsupported sweep expression")


def parse(params: dict[str, Any]) -> dict[str, SearchParam]:
    """The sweep's params node -> ordered {name: SearchParam}; conditions checked, parents first."""
    space: dict[str, SearchParam] = {}
    for name, spec in params.items():
        when = None
        if isinstance(spec, dict):
            extra = set(spec) - {"values", "when"}
            if "values" not in spec or extra:
                raise ConfigError(f"sweep.params.{name}", spec, "a mapping needs 'values' and optionally 'when'")
            when = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in (spec.get("when") or {}).items()}
            spec = spec["values"]
        space[name] = SearchParam(name, str(spec), to_distribution(name, str(spec)), when)
    for p in space.values():
        for parent, values in (p.when or {}).items():
            dist = space.get(parent) and space[parent].distribution
            if not isinstance(dist, CategoricalDistribution):
                raise ConfigError(f"sweep.params.{p.name}.when", parent, "must name a choice() parameter of this sweep")
            bad = [v for v in values if v not in dist.choices]
            if bad:
                raise ConfigError(f"sweep.params.{p.name}.when.{parent}", bad, f"allowed: {list(dist.choices)}")
    ordered = sorted(space.values(), key=lambda p: bool(p.when))  # unconditional params first
    return {p.name: p for p in ordered}


def signature(space: dict[str, SearchParam]) -> dict[str, Any]:
    """A JSON-able description, stored with the study to refuse a changed search space on resume."""
    from optuna.distributions import distribution_to_json

    return {p.name: {"distribution": distribution_to_json(p.distribution), "when": p.when} for p in space.values()}


def format_override(name: str, value: Any) -> str:
    """An Optuna value as a Hydra override (floats exact, strings quoted when needed)."""
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, bool):
        text = str(value).lower()
    elif value is None:
        text = "null"
    elif isinstance(value, str) and not value.replace("_", "").replace("-", "").isalnum():
        text = "'" + value.replace("'", "\\'") + "'"
    else:
        text = str(value)
    return f"{name}={text}"
