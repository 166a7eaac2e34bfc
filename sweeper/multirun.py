"""Hydra's multirun habit: ``python -m sweeper -m regularizer.p=0.1,0.2,0.3`` becomes an ad-hoc study.

The command line is rewritten into an ordinary sweep (``+sweep=multirun`` plus ``sweep.params.*``), so the
study, its baseline, MLflow runs, replication and report are exactly those of a sweep file:

* comma lists and ``choice()`` -> ``choice(...)``; ``range()`` and ``interval()`` are kept as written;
* lists and ranges only -> the grid sampler, with exactly one trial per combination (plus the baseline);
  an ``interval()`` -> the configured sampler (TPE) for ``sweep.n_trials`` trials;
* ``-m seed=1,2,3`` alone -> those seeds as a grid with no baseline and no replication: the report shows
  the mean and 95% CI over the seeds ("Across seeds");
* the study is named from the overrides unless ``sweep.name`` is given.
"""

from __future__ import annotations

import hashlib
import math
import re

from .errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")
_SWEEP_FUNCS = ("choice(", "range(", "interval(", "glob(", "tag(", "shuffle(", "sort(")


def requested(argv: list[str]) -> bool:
    return any(a in MULTIRUN_FLAGS for a in argv)


def _parse(override: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides([override])[0]
    except Exception as exc:
        key, _, value = override.partition("=")
        raise ConfigError(key.lstrip("+~") or "override", value or override, str(exc).splitlines()[0]) from None


def is_sweep(override: str) -> bool:
    """A Hydra sweep value: a top-level comma list or a sweep function (choice/range/interval)."""
    key, sep, value = override.partition("=")
    if not sep or key.lstrip("+").startswith("sweep.params."):
        return False
    if not (value.startswith(_SWEEP_FUNCS) or "," in value):
        return False
    try:
        return bool(_parse(override).is_sweep_override())
    except ConfigError:
        if value.startswith(_SWEEP_FUNCS):  # a malformed sweep: say what is wrong with it
            raise
        return False


def refuse_without_flag(argv: list[str]) -> None:
    """A comma list without -m: say what to do instead of Hydra's 'Ambiguous value'."""
    for a in argv:
        if is_sweep(a):
            key, _, value = a.partition("=")
            raise ConfigError(key, value, f"a sweep over values needs -m (multirun): python -m sweeper -m {a}")


def _values_text(override, written: str) -> tuple[str, int | None]:
    """(the search-space expression, the number of grid points or None for a continuous interval)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):  # a,b,c (simple form) or choice(a,b,c): the same grammar either way
        seen: set[str] = set()
        for v in value.list:
            if repr(v) in seen:  # the grid would train the same model twice: for seeds, a CI of fake precision
                why = (
                    "the same seed twice is one replicate counted twice"
                    if override.key_or_group == "seed"
                    else "a grid point twice trains the same model twice"
                )
                raise ConfigError(override.key_or_group, written, f"lists {v} more than once ({why}); list each value once")
            seen.add(repr(v))
        return (f"choice({written})" if value.simple_form else written), len(value.list)
    if isinstance(value, RangeSweep):
        try:
            return written, len(list(value.range()))
        except ValueError:  # a zero step (Python's range() refuses it); the search space checks the rest
            raise ConfigError(override.key_or_group, written, "range(start, stop, step) needs step > 0 and stop > start") from None
    if isinstance(value, IntervalSweep):
        return written, None
    raise ConfigError(override.key_or_group, written, "supported with -m: a,b,c  choice()  range()  interval()")


def _name(swept: dict[str, str]) -> str:
    """A readable, path-safe study name from the swept keys and a digest of their values."""
    digest = hashlib.sha1(repr(sorted(swept.items())).encode()).hexdigest()[:6]
    keys = "_".join(k.rsplit(".", 1)[-1] for k in swept)
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"multirun_{keys}")[:100] + f"_{digest}"


def to_sweep_argv(argv: list[str]) -> list[str]:
    """The multirun command line as an ordinary sweep command line (raises ConfigError on what cannot be swept)."""
    rest = [a for a in argv if a not in MULTIRUN_FLAGS]
    if any(a.lstrip("+").startswith("sweep=") for a in rest):
        raise ConfigError("-m", "+sweep=...", "use either a sweep file (+sweep=<name>) or -m with values on the command line, not both")
    plain, swept, sizes = [], {}, []
    for a in rest:
        if not is_sweep(a):
            plain.append(a)
            continue
        override = _parse(a)
        key = override.key_or_group
        if override.package:
            raise ConfigError(key, a, "package overrides (key@pkg) cannot be swept with -m")
        text, size = _values_text(override, a.partition("=")[2])
        swept[key] = text
        sizes.append(size)
    if not swept:
        raise ConfigError("-m", " ".join(rest) or "(no overrides)", "-m needs at least one swept value, e.g. -m regularizer.p=0.1,0.2,0.3")
    given = {a.split("=", 1)[0].lstrip("+") for a in plain if "=" in a}
    grid = all(s is not None for s in sizes)
    seeds_only = set(swept) == {"seed"}
    defaults = {"sweep.name": _name(swept)}
    if grid:
        defaults["sweep.sampler.name"] = "grid"
    if seeds_only:  # replicates of one configuration: no baseline, no search, the report's "Across seeds" table
        defaults.update({"sweep.baseline": "null", "sweep.replicates": "0", "sweep.pruner.name": "none"})
    if grid:
        baseline = not seeds_only and "sweep.baseline" not in given
        defaults["sweep.n_trials"] = str(math.prod(s for s in sizes if s) + int(baseline))
    out = [*plain, "+sweep=multirun", *(f"{k}={v}" for k, v in defaults.items() if k not in given)]
    return out + [f"sweep.params.{k}='{v}'" for k, v in swept.items()]
