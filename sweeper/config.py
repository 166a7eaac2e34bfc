"""Config schemas (registered with Hydra's ConfigStore), composition, and all validation.

Where the stores are (tracking URI, Optuna storage) is ``stores.py``'s job.

Everything a run or a sweep reads comes through ``load()``: Hydra composes ``conf/`` with the
command-line overrides, the structured schema types it, and ``validate()`` checks every value,
raising a one-line ``ConfigError`` (field, value, what is allowed) before anything is written.
"""

from __future__ import annotations

import collections
import copy
import functools
import math
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from . import conf_layers, regularizers, stores
from .errors import ConfigError
from .names import check_name

GROUPS = ("data", "model", "regularizer", "trainer", "tracking", "launcher", "sweep")
DATASETS = ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "csv")
MODELS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid")
OPTIMIZERS = ("adam", "sgd")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclass
class SplitConfig:
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15


@dataclass
class DataConfig:
    name: str = MISSING
    batch_size: int = 32
    eval_batch_size: int = 2048
    split: SplitConfig = field(default_factory=SplitConfig)
    split_seed: int = 0
    train_fraction: float = 1.0  # stratified share of the train split actually used
    root: str = "data"  # torchvision datasets
    download: bool = False
    path: Optional[str] = None  # csv
    label: str = "label"  # csv
    order_stream: int = 0  # > 0: another data-order stream for the same seed (same initial weights; calibration runs)


@dataclass
class ModelConfig:
    name: str = MISSING
    hidden: List[int] = field(default_factory=lambda: [64, 32])
    activation: str = "relu"
    channels: List[int] = field(default_factory=lambda: [16, 32])  # cnn only


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    accelerator: str = "auto"
    devices: int = 1
    threads: Optional[int] = None  # torch intra-op threads; null = torch's default
    deterministic: bool = False
    scale_epochs_by_fraction: bool = False  # data_size: max_epochs / data.train_fraction epochs, the same optimizer steps
    max_epochs_cap: int = 200  # the cap on those scaled epochs
    checkpoint_every: int = 0  # sweeps: save a Lightning checkpoint to the trial's MLflow run every N epochs (0: off)


@dataclass
class TrackingConfig:
    mode: str = "local"
    uri: Optional[str] = None  # null: sqlite:///mlruns/mlflow.db (or $MLFLOW_TRACKING_URI)
    experiment: Optional[str] = None  # one run's experiment; null: $MLFLOW_EXPERIMENT_NAME, else "sweeper"
    storage: Optional[str] = None  # Optuna storage; null: sqlite:///mlruns/optuna.db
    artifact_root: Optional[str] = None  # local mode: mlruns/artifacts
    system_metrics_interval: float = 10  # seconds between system-metric samples on a sweep's parent run (0: off)


@dataclass
class LauncherConfig:
    """Where a sweep's workers run: ``local`` (``workers=N`` processes here) or ``slurm`` (a submitit job array)."""

    name: str = "local"
    workers: int = 4  # slurm: array tasks, one worker each
    executor: str = "slurm"  # slurm, or local (submitit's local executor: real processes, for testing)
    partition: Optional[str] = None
    time_min: int = 240
    gpus_per_task: int = 0
    cpus_per_task: int = 2
    mem_gb: float = 8
    folder: str = "slurm_logs/%j"
    additional_parameters: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SamplerConfig:
    name: str = "tpe"  # tpe, random, grid, cmaes, gp, nsga2
    seed: Optional[int] = 0
    n_startup_trials: int = 4  # tpe / gp: random trials before modelling


@dataclass
class PrunerConfig:
    # hyperband (default), median, percentile, successive_halving, none. The default was chosen by measurement
    # (benchmarks/pruning_bias.py, docs/statistics.md): same answer as no pruning at 60% of its epochs.
    name: str = "hyperband"
    n_startup_trials: int = 3  # median / percentile: trials that are never pruned
    n_warmup_steps: int = 2  # epochs before a trial may be pruned (used when warmup_fraction is null)
    warmup_fraction: Optional[float] = None  # epochs before pruning as a share of max_epochs (overrides n_warmup_steps)
    interval_steps: int = 1
    percentile: float = 25.0
    min_resource: int = 2  # successive_halving / hyperband: epochs before the first comparison
    reduction_factor: int = 3


@dataclass
class SweepConfig:
    name: str = MISSING
    study_name: Optional[str] = None  # null: the sweep name
    metric: str = "val_acc"
    direction: str = "maximize"
    metrics: Optional[List[str]] = None  # multi-objective: with `directions`, replaces metric/direction
    directions: Optional[List[str]] = None
    n_trials: int = 12  # the study's total, over every invocation and worker
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    params: Dict[str, Any] = field(default_factory=dict)
    baseline: Optional[List[str]] = field(default_factory=lambda: ["regularizer=none"])
    heartbeat_interval: int = 5  # seconds between a running trial's heartbeats
    grace_period: int = 20  # seconds without a heartbeat before a trial counts as stale
    max_retry: int = 2  # retries of a stale (worker died) or interrupted trial
    top_k: int = 10  # rows of the final table
    techniques: Optional[List[str]] = None  # compare: one regularizer option per slot, equal budgets
    trials_per_technique: int = 4
    replicates: int = 5  # seeds each technique's best configuration is retrained with (0: no replication)
    replicates_max: Optional[int] = None  # > replicates: a second look adds seeds to inconclusive leaders (null: no)
    replicate_seed: Optional[int] = None  # first replicate seed (null: seed + 1000); never a seed the search used
    references: Optional[Dict[str, List[str]]] = field(default_factory=dict)  # extra replicated configs (name: overrides)
    alpha: float = 0.05  # family-wise error rate of one report's comparisons (Holm)
    margin: float = 0.5  # equivalence margin in accuracy points: "as accurate" needs the diff's 95% CI above -margin
    timing_repeats: int = 5  # interleaved cost measurements per reported configuration (0: none)
    claim: Optional[str] = None  # a published claim the report checks against a reference row
    claim_reference: Optional[str] = None  # the references entry that reproduces the claim
    axis: Optional[str] = None  # data_size / depth sweeps: the searched parameter on the report's x axis
    report_dir: str = "reports"
    population: Any = "auto"  # trials trained at once as one vectorized model by each worker (1: one at a time)


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    regularizer: Dict[str, Any] = field(default_factory=regularizers.defaults)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    seed: int = 0
    storage: Optional[str] = None  # shortcut for tracking.storage
    workers: Any = 1  # an integer >= 1, or "auto": one worker per GPU (one on CPU)
    sweep: Optional[SweepConfig] = None
    config_dirs: List[str] = field(default_factory=list)  # team config folders in effect (set by load(); see conf_layers)


ConfigStore.instance().store(name="sweeper_schema", node=Config)


def available(group: str, layers: list[Path] | None = None) -> list[str]:
    """The group's options, shipped and team ones (``conf_layers``); ``layers`` default: ./conf and $SWEEPER_CONFIG_DIR."""
    return conf_layers.options(group, conf_layers.overlays() if layers is None else layers)


def _check_group_choices(overrides: list[str], layers: list[Path]) -> None:
    """Unknown config-group options get a one-line error listing the available ones."""
    for ov in overrides:
        key, sep, value = ov.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        if key == "sweep" and not value.strip():  # `+sweep=`: Hydra said "Could not find 'sweep/'"
            raise ConfigError(key, value, f"names no sweep; available: {', '.join(available(key, layers))}")
        names = value.strip("[]").split(",") if value.startswith("[") else [value]
        for name in (n.strip() for n in names):
            if name and name not in available(key, layers):
                raise ConfigError(key, name, f"unknown {key}; available: {', '.join(available(key, layers))}")


def compose_config(overrides: list[str], layers: list[Path] | None = None) -> DictConfig:
    """Hydra composition of the config layers + overrides (the same grammar as @hydra.main)."""
    layers = conf_layers.overlays() if layers is None else layers
    _check_group_choices(overrides, layers)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_layers.root(layers)), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        msg = str(getattr(exc, "msg", exc)).splitlines()[0]
        value = getattr(exc, "value", None)
        raise ConfigError(key, value, _plain(msg, key, value)) from None
    except Exception as exc:  # hydra's own override/compose errors
        raise _hydra_error(exc, overrides, layers) from None
    finally:
        GlobalHydra.instance().clear()


def _plain(msg: str, key: str, value: Any) -> str:
    """OmegaConf's words for a scalar given to a list key (`sweep.techniques=dropout`, `model.hidden=64`), as a fix."""
    if "is not a ListConfig, list or tuple" in msg:
        return f"must be a list: {key}=[{value}]"
    return msg


_MAPPING_SHAPES = {  # what a mapping-typed key holds, and how to add an entry from the command line
    "sweep.references": "name: [overrides]; add one with \"+sweep.references.p02=['regularizer.p=0.2']\"",
    "sweep.params": "key: search expression; add one with sweep.params.regularizer.p=interval(0.05,0.6)",
}


def _value_of(overrides: list[str], key: str) -> str | None:
    """The value an override gives ``key`` (``+key=v``, ``key=v``), or None."""
    return next((o.split("=", 1)[1] for o in overrides if "=" in o and o.lstrip("+~").split("=")[0] == key), None)


def _hydra_error(exc: Exception, overrides: list[str], layers: list[Path]) -> ConfigError:
    """Turn a Hydra composition error into one line naming the field and value (and the YAML file it came from)."""
    cause = exc.__cause__
    text = str(cause if cause is not None else exc)
    where = re.search(r'in "[^"]*/conf/(\w+)/([\w.-]+)\.yaml", line (\d+)', text)  # a YAML syntax error, in the merged folder
    if where:
        group, option, line = where.groups()
        problem = text.splitlines()[0]
        return ConfigError(group, option, f"{conf_layers.origin(group, option, layers)} is not valid YAML: {problem} (line {line})")
    named = [o.lstrip("+~").split("=")[0] for o in overrides]  # the keys the overrides name
    if "Unexpected type for root: NoneType" in text and "sweep" not in named:  # sweep.* with no sweep chosen
        swept = next((k for k in named if k.startswith("sweep.")), None)
        if swept is not None:
            sweeps = ", ".join(available("sweep", layers))
            return ConfigError(
                swept, _value_of(overrides, swept), f"a sweep setting, but no sweep was chosen: add +sweep=NAME (available: {sweeps})"
            )
    key_match = re.search(r"full_key: (\S+)", text)
    lines = text.splitlines()
    first = lines[0] if text else type(exc).__name__
    if first.endswith("raised while composing config:") and len(lines) > 1:  # the reason is on the next line
        first = f"{first} {lines[1].strip()}"
    if "Cannot merge DictConfig with ListConfig" in first and key_match:  # a list given for a mapping-typed key
        first = f"must be a mapping of {_MAPPING_SHAPES.get(key_match.group(1), 'key: value, not a list')}"
    if key_match:
        key = key_match.group(1)  # the override that names the key, or one below it:
        field_name = next((n for n in named if n == key), None) or next((n for n in named if n.startswith(key + ".")), key)
        value = _value_of(overrides, field_name)
        element = re.fullmatch(r"(.+)\[(\d+)\]", key)  # model.hidden[0]: one element of the list an override gave
        if value is None and element and element.group(1) in named:
            field_name, value = element.group(1), _value_of(overrides, element.group(1))
            first = f"element {element.group(2)}: {first}"
        if "not in" in text:
            if "." in key:
                first = f"unknown key {key.rsplit('.', 1)[-1]!r} in {key.rsplit('.', 1)[0]}"
            else:
                first = f"unknown top-level key {key!r}; top-level keys: {', '.join(f.name for f in fields(Config))}"
            source = re.match(r"In '(\w+)/([\w.-]+)'", text)  # the key is in a config file, not on the command line
            if source and field_name not in named:
                first += f" (set in {conf_layers.origin(source.group(1), source.group(2), layers)})"
        return ConfigError(field_name, value, _plain(first, field_name, value))
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for ov in overrides:  # name the one override that does not parse
        try:
            OverridesParser.create().parse_overrides([ov])
        except Exception as bad:
            key, _, value = ov.partition("=")
            return ConfigError(
                key.lstrip("+~") or "override", value or ov, f"{str(bad).splitlines()[0]} (quote values with brackets or '=' inside)"
            )
    return ConfigError("overrides", " ".join(overrides), first)


SWEEP_PARAM_PREFIX = "sweep.params."


def split_param_overrides(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """`sweep.params.<dotted.path>=<expr>` overrides: applied by us, since the path itself has dots."""
    rest, params = [], {}
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if sep and key.lstrip("+").startswith(SWEEP_PARAM_PREFIX) and key.lstrip("+") != SWEEP_PARAM_PREFIX[:-1]:
            params[key.lstrip("+")[len(SWEEP_PARAM_PREFIX) :]] = value.strip("'\"")
        else:
            rest.append(ov)
    return rest, params


def load(argv: list[str]) -> DictConfig:
    """Compose and validate (``argv``: overrides, and any ``--config-dir DIR``); the returned config is read-only."""
    overrides, cli_dirs = conf_layers.split_argv(list(argv))
    layers = conf_layers.overlays(cli_dirs)
    overrides, param_overrides = split_param_overrides(overrides)
    cfg = compose_config(overrides, layers)
    cfg.config_dirs = [str(p) for p in layers]
    if param_overrides:
        if cfg.sweep is None:
            raise ConfigError("sweep.params", param_overrides, "only valid with +sweep=<name>")
        with open_dict(cfg.sweep.params):
            for name, expr in param_overrides.items():
                cfg.sweep.params[name] = expr
    try:
        _check_mandatory(cfg)
        validate(cfg)
        if cfg.sweep is not None:
            validate_sweep(cfg)
    except ConfigError as exc:
        raise _naming_team_file(exc, cfg, overrides, layers) from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _check_technique(cfg: DictConfig, tech: str) -> None:
    """A compare sweep's technique trains with the sweep's optimizer and batch size: its own file's values (read,
    not composed: one small YAML each) must be valid with them, or every slot of it would fail while the sweep exits
    0 (batch norm at data.batch_size=1 did)."""
    path = conf_layers.origin("regularizer", tech, _layers(cfg))
    values = OmegaConf.to_container(OmegaConf.load(path)) or {}
    if not isinstance(values, dict):
        return  # the composition of its slots reports a file of the wrong shape
    try:
        active = regularizers.build({str(k): v for k, v in values.items()}, cfg.optim.name)
    except ConfigError as exc:
        raise ConfigError("sweep.techniques", tech, f"its {exc.field}: {exc.allowed}") from None
    problem = _batchnorm_misfit(active, int(cfg.data.batch_size))
    if problem:
        raise ConfigError("sweep.techniques", tech, f"its {problem[0]}={problem[1]}: {problem[2]}")


def _check_mandatory(cfg: DictConfig) -> None:
    """A value left ``???`` (e.g. a team's sweep file without ``name:``) is named in one line, not raised as
    OmegaConf's MissingMandatoryValue from wherever it is first read."""
    for key in OmegaConf.missing_keys(cfg):
        raise ConfigError(key, MISSING, "is required and was not set")


_COMPOSED: dict[tuple, DictConfig] = {}


def load_with(base: list[str], overrides: list[str]) -> DictConfig:
    """``load(base + overrides)`` for the many configs of one sweep (trials, replicates, timing probes): the sweep's
    command line plus the trial's config-group choices and ``+``/``~`` overrides are composed by Hydra once per
    process and distinct choice (e.g. once per technique of ``+sweep=compare``), and each trial's ``key=value``
    overrides are merged into a copy the way Hydra merges them after composing (``OmegaConf.update``), then
    validated. Anything that does not merge cleanly takes the full ``load`` (with its one-line errors)."""
    structural = [o for o in overrides if o.startswith(("+", "~")) or "=" not in o or o.split("=", 1)[0] in GROUPS]
    simple = [o for o in overrides if o not in structural]
    composed = list(base) + structural
    key = (tuple(composed), tuple(str(p) for p in conf_layers.overlays(conf_layers.split_argv(list(base))[1])))
    try:
        if key not in _COMPOSED:
            _COMPOSED[key] = load(composed)
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = copy.deepcopy(_COMPOSED[key])
        OmegaConf.set_readonly(cfg, False)
        for ov in OverridesParser.create().parse_overrides(simple):
            OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=True)
        validate(cfg)
    except Exception:  # let the full composition say what is wrong
        return load(base + overrides)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _naming_team_file(exc: ConfigError, cfg: DictConfig, overrides: list[str], layers: list[Path]) -> ConfigError:
    """A bad value that comes from a team's config file: the error names that file."""
    group = exc.field.split(".", 1)[0]
    if group not in GROUPS or not layers:
        return exc
    chosen = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == group and "=" in o), None)
    if chosen is None and group != "sweep":
        chosen = OmegaConf.select(cfg, f"{group}.name", default=None)
    if not chosen or chosen.startswith("["):
        return exc
    path = conf_layers.origin(group, chosen, layers)
    if conf_layers.SHIPPED in path.parents:
        return exc
    if exc.value == MISSING:  # a required value the file leaves out
        return ConfigError(exc.field, exc.value, f"{exc.allowed}: add `{exc.field.split('.', 1)[1]}:` to {path}")
    return ConfigError(exc.field, exc.value, f"{exc.allowed} (set in {path})")


PRUNER_INTS = {  # the smallest value Optuna's pruners accept (below it they raise, or divide by zero), and why
    "n_startup_trials": (0, "trials never pruned (median, percentile)"),
    "n_warmup_steps": (0, "epochs before a trial may be pruned"),
    "interval_steps": (1, "epochs between pruning checks"),
    "min_resource": (1, "epochs before the first comparison (successive_halving, hyperband)"),
    "reduction_factor": (2, "each rung keeps 1/reduction_factor of the trials (successive_halving, hyperband)"),
}


def _check_pruner_numbers(p: Any) -> None:
    """Every pruner setting, whichever pruner is chosen: a bad one would otherwise surface as Optuna's ValueError
    (or a ZeroDivisionError from Hyperband) after the stores are open."""
    for key, (low, what) in PRUNER_INTS.items():
        value = p[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"sweep.pruner.{key}", value, f"must be an integer >= {low}: {what}")
    pct = p.percentile
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 <= pct <= 100:
        raise ConfigError("sweep.pruner.percentile", pct, "must be a number in [0, 100] (percentile pruner)")


def _positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(name, value, "must be an integer > 0")


@functools.cache
def _schema_fields(schema: type) -> dict[str, type | None]:
    """A schema's fields, each with its dataclass type where it is one (``Optional[SweepConfig]`` too), else None."""
    hints = typing.get_type_hints(schema)
    nested = lambda t: next((a for a in (t, *typing.get_args(t)) if is_dataclass(a) and isinstance(a, type)), None)
    return {f.name: nested(hints[f.name]) for f in fields(schema)}


def check_known_keys(node: Any, schema: type = Config, prefix: str = "") -> None:
    """A key the schema does not have (``+trainer.foo=1``, ``+typo=3``, a stray key in a team's YAML) is refused:
    Hydra's ``+`` adds it, and nothing would ever read it, so a misspelt setting would silently do nothing."""
    hints = _schema_fields(schema)
    for key in node:
        name = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(name, node[key], f"unknown key; allowed: {', '.join(f.name for f in fields(schema))}")
        kind = hints[key]
        if kind is not None and isinstance(node[key], DictConfig):
            check_known_keys(node[key], kind, f"{name}.")


def validate(cfg: DictConfig) -> None:
    check_known_keys(cfg)
    d, m, t = cfg.data, cfg.model, cfg.trainer
    if d.name not in DATASETS:
        raise ConfigError("data.name", d.name, f"allowed: {', '.join(DATASETS)}")
    _positive_int(d.batch_size, "data.batch_size")
    _positive_int(d.eval_batch_size, "data.eval_batch_size")
    fr = {k: d.split[k] for k in ("train", "val", "test")}
    for k, v in fr.items():
        if not (isinstance(v, (int, float)) and 0 < v < 1):
            raise ConfigError(f"data.split.{k}", v, "each split fraction must be in (0, 1): an empty split is not allowed")
    if not math.isclose(sum(fr.values()), 1.0, abs_tol=1e-6):
        raise ConfigError("data.split", dict(fr), f"fractions must sum to 1 (they sum to {sum(fr.values()):g})")
    if not isinstance(d.split_seed, int) or isinstance(d.split_seed, bool) or not 0 <= d.split_seed < 2**32:
        raise ConfigError("data.split_seed", d.split_seed, "must be an integer in [0, 2**32)")
    if not isinstance(d.order_stream, int) or d.order_stream < 0:
        raise ConfigError("data.order_stream", d.order_stream, "must be an integer >= 0 (0: the seed's own data order)")
    if not 0 < d.train_fraction <= 1:
        raise ConfigError("data.train_fraction", d.train_fraction, "must be in (0, 1]")
    if d.name == "csv":
        if not d.path:
            raise ConfigError("data.path", d.path, "data=csv needs data.path=<file.csv>")
        if Path(d.path).is_dir():
            raise ConfigError("data.path", d.path, "is a folder; data=csv needs a CSV file")
        if not Path(d.path).is_file():
            raise ConfigError("data.path", d.path, "file does not exist")
    elif d.path is not None:  # it would be silently ignored: the run would train on data.name's data instead
        raise ConfigError("data.path", d.path, f"is used only by data=csv (data.name is {d.name}); add data=csv or drop data.path")
    if m.name not in MODELS:
        raise ConfigError("model.name", m.name, f"allowed: {', '.join(MODELS)}")
    if not m.hidden or any(not isinstance(h, int) or h <= 0 for h in m.hidden):
        raise ConfigError("model.hidden", list(m.hidden), "must be a non-empty list of positive integers")
    if m.name == "cnn" and (not m.channels or any(c <= 0 for c in m.channels)):
        raise ConfigError("model.channels", list(m.channels), "must be a non-empty list of positive integers")
    if m.activation not in ACTIVATIONS:
        raise ConfigError("model.activation", m.activation, f"allowed: {', '.join(ACTIVATIONS)}")
    if cfg.optim.name not in OPTIMIZERS:
        raise ConfigError("optim.name", cfg.optim.name, f"allowed: {', '.join(OPTIMIZERS)}")
    if not (cfg.optim.lr > 0 and math.isfinite(cfg.optim.lr)):
        raise ConfigError("optim.lr", cfg.optim.lr, "must be a finite number > 0")
    if not 0 <= cfg.optim.momentum < 1:  # torch refuses < 0; from 1 on SGD's velocity grows without bound
        raise ConfigError("optim.momentum", cfg.optim.momentum, "must be in [0, 1) (SGD's momentum)")
    _positive_int(t.max_epochs, "trainer.max_epochs")
    _positive_int(t.max_epochs_cap, "trainer.max_epochs_cap")
    if not isinstance(t.checkpoint_every, int) or isinstance(t.checkpoint_every, bool) or t.checkpoint_every < 0:
        raise ConfigError("trainer.checkpoint_every", t.checkpoint_every, "must be an integer >= 0 (0: no checkpoints)")
    if t.accelerator not in ACCELERATORS:
        raise ConfigError("trainer.accelerator", t.accelerator, f"allowed: {', '.join(ACCELERATORS)}")
    if t.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", t.accelerator, "no CUDA GPU is visible here; use auto or cpu")
    if t.devices != 1:
        raise ConfigError("trainer.devices", t.devices, "only 1 is supported (trials are small; run workers=N for parallelism)")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ConfigError("seed", cfg.seed, "must be an integer in [0, 2**32)")
    if t.threads is not None:
        _positive_int(t.threads, "trainer.threads")
    if cfg.workers != "auto":
        try:
            _positive_int(cfg.workers, "workers")
        except ConfigError:
            raise ConfigError("workers", cfg.workers, "must be an integer > 0 or auto (one worker per GPU)") from None
    stores.experiment_name(cfg)  # names the variable when the bad name came from $MLFLOW_EXPERIMENT_NAME
    smi = cfg.tracking.system_metrics_interval
    if isinstance(smi, bool) or not isinstance(smi, (int, float)) or not (smi == 0 or 0.5 <= smi < math.inf):
        raise ConfigError("tracking.system_metrics_interval", smi, "must be 0 (off) or a number of seconds >= 0.5")
    if cfg.tracking.mode not in ("local", "server"):
        raise ConfigError("tracking.mode", cfg.tracking.mode, "allowed: local, server")
    if cfg.tracking.mode == "server":
        stores.tracking_uri(cfg)  # names a missing environment variable now, before anything runs
        stores.storage_url(cfg)
    active = regularizers.build(to_dict(cfg.regularizer), cfg.optim.name)
    problem = _batchnorm_misfit(active, int(d.batch_size))
    if problem:
        raise ConfigError(*problem)
    validate_launcher(cfg)


def _batchnorm_misfit(active: list, batch_size: int) -> tuple[str, Any, str] | None:
    """(field, value, why) when batch norm cannot work as configured with this batch size: torch refuses to normalize
    one row, and a ghost batch larger than the batch is the whole batch (plain batch norm, not what was asked)."""
    bn = next((r for r in active if r.name == "batchnorm"), None)
    if bn is None:
        return None
    if batch_size < 2:
        return ("data.batch_size", batch_size, "batch norm needs at least 2 rows per training batch")
    ghost = bn.values["bn_ghost"]
    if ghost is not None and ghost > batch_size:
        why = f"a ghost batch must not be larger than data.batch_size ({batch_size}): it would be plain batch norm; use null for that"
        return ("regularizer.bn_ghost", ghost, why)
    return None


LAUNCHERS = ("local", "slurm")
SLURM_EXECUTORS = ("slurm", "local")


def validate_launcher(cfg: DictConfig) -> None:
    """launcher=slurm: a sweep, a worker count, and stores that workers on other hosts can share."""
    ln = cfg.launcher
    if ln.name not in LAUNCHERS:
        raise ConfigError("launcher.name", ln.name, f"allowed: {', '.join(LAUNCHERS)}")
    if ln.name == "local":
        return
    if cfg.sweep is None:
        raise ConfigError("launcher", ln.name, "launcher=slurm runs a sweep's workers; add +sweep=<name>")
    if cfg.workers != 1:
        raise ConfigError("workers", cfg.workers, "with launcher=slurm set launcher.workers=N (one worker per array task)")
    _positive_int(ln.workers, "launcher.workers")
    _positive_int(ln.time_min, "launcher.time_min")
    _positive_int(ln.cpus_per_task, "launcher.cpus_per_task")
    if ln.executor not in SLURM_EXECUTORS:
        raise ConfigError("launcher.executor", ln.executor, f"allowed: {', '.join(SLURM_EXECUTORS)}")
    if not isinstance(ln.gpus_per_task, int) or ln.gpus_per_task < 0:
        raise ConfigError("launcher.gpus_per_task", ln.gpus_per_task, "must be an integer >= 0")
    if not ln.mem_gb > 0:
        raise ConfigError("launcher.mem_gb", ln.mem_gb, "must be > 0")
    stores.check_shared_stores(cfg)


def max_epochs(cfg: DictConfig) -> int:
    """Epochs a run trains: trainer.max_epochs, or with scale_epochs_by_fraction the same optimizer-step
    budget at any data.train_fraction (max_epochs / fraction, rounded up, capped at trainer.max_epochs_cap)."""
    epochs = int(cfg.trainer.max_epochs)
    if cfg.trainer.scale_epochs_by_fraction and cfg.data.train_fraction < 1:
        epochs = min(int(cfg.trainer.max_epochs_cap), math.ceil(epochs / float(cfg.data.train_fraction) - 1e-9))
    return epochs


def to_dict(node: Any) -> dict[str, Any]:
    """A config node as a plain dict with interpolations resolved."""
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted.key: leaf}."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config flattened to dotted keys (the sweep section is the study's; where workers ran is not a result)."""
    container = to_dict(cfg)
    container.pop("sweep", None)
    container.pop("launcher", None)
    return flatten(container)


# --- sweeps --------------------------------------------------------------------------------------
SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "nsga2")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")
EPOCH_METRICS = ("val_acc", "val_loss")  # reported per epoch, so the pruner can act on them
OBJECTIVE_METRICS = (
    "val_acc",
    "val_loss",
    "best_val_acc",
    "final_gen_gap",
    "train_time_s",
    "epoch_time_s",
    "inference_ms_per_1k",
    "n_params",
    "sparsity_zero",
    "sparsity_1e-3",
    "weight_l1",
    "weight_l2",
    "epochs_trained",
)  # never test_*: the test split is for reporting only


# metrics whose better direction is not a choice: maximizing a loss or a cost would select the worst trials
NATURAL_DIRECTIONS = {
    "val_acc": "maximize",
    "best_val_acc": "maximize",
    "val_loss": "minimize",
    "final_gen_gap": "minimize",
    "train_time_s": "minimize",
    "epoch_time_s": "minimize",
    "inference_ms_per_1k": "minimize",
}


MAX_REPLICATES = 1_000  # seeds per replicated configuration; x ~10 configurations = MAX_TRIALS slots
MAX_TRIALS = 10_000  # slots queued at setup: 13 ms each measured (SQLite, busy 2 cores), 10,000 ~2 min, 1e8 ~2 weeks


def n_trials(sweep: Any) -> int:
    """The study's total: n_trials, or for a compare sweep 1 baseline + an equal budget per technique."""
    if sweep.techniques:
        return (1 if sweep.baseline is not None else 0) + len(sweep.techniques) * int(sweep.trials_per_technique)
    return int(sweep.n_trials)


def objectives(sweep: Any) -> list[tuple[str, str]]:
    """[(metric, direction), ...]: one pair, or several for a multi-objective study."""
    if sweep.metrics is not None or sweep.directions is not None:
        metrics, directions = list(sweep.metrics or []), list(sweep.directions or [])
        if len(metrics) != len(directions) or len(metrics) < 1:
            raise ConfigError("sweep.directions", directions, f"needs one direction per metric in sweep.metrics {metrics}")
        twice = [m for i, m in enumerate(metrics) if m in metrics[:i]]
        if twice:  # two objectives that are one: a Pareto front of a single metric, plotted against itself
            raise ConfigError("sweep.metrics", metrics, f"lists {twice[0]} more than once; each objective once")
        return list(zip(metrics, directions))
    return [(sweep.metric, sweep.direction)]


def validate_sweep(cfg: DictConfig) -> dict:
    """Check the sweep section; returns the parsed search space. Raises ConfigError, writes nothing."""
    from . import search_space

    sw = cfg.sweep
    check_name("sweep.name", sw.name)
    if sw.study_name is not None:
        check_name("sweep.study_name", sw.study_name)
    study = sw.study_name or sw.name
    if cfg.tracking.experiment is not None and cfg.tracking.experiment != study:
        raise ConfigError(  # it was silently ignored: the runs went to the study's experiment
            "tracking.experiment",
            cfg.tracking.experiment,
            f"a sweep's MLflow experiment is its study name ({study!r}; one experiment per study): "
            f"name the study instead, sweep.study_name={cfg.tracking.experiment}",
        )
    for ref in sw.references or {}:
        check_name(f"sweep.references.{ref}", ref)
    _positive_int(sw.n_trials, "sweep.n_trials")
    for metric, direction in objectives(sw):
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(
                "sweep.metric",
                metric,
                f"not a metric trials produce for selection (test_* is for reporting only); allowed: {', '.join(OBJECTIVE_METRICS)}",
            )
        if direction not in DIRECTIONS:
            raise ConfigError("sweep.direction", direction, f"allowed: {', '.join(DIRECTIONS)}")
        natural = NATURAL_DIRECTIONS.get(metric)
        if natural is not None and direction != natural:
            field_name = "sweep.directions" if sw.directions is not None else "sweep.direction"
            raise ConfigError(
                field_name, direction, f"{metric} is only ever {natural}d (the study would select its worst trials): set {natural}"
            )
    if sw.sampler.name not in SAMPLERS:
        raise ConfigError("sweep.sampler.name", sw.sampler.name, f"allowed: {', '.join(SAMPLERS)}")
    seed = sw.sampler.seed
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32):
        raise ConfigError("sweep.sampler.seed", seed, "must be an integer in [0, 2**32) or null (unseeded)")
    n_random = sw.sampler.n_startup_trials
    if not isinstance(n_random, int) or isinstance(n_random, bool) or n_random < 0:
        raise ConfigError("sweep.sampler.n_startup_trials", n_random, "must be an integer >= 0 (random trials before modelling)")
    if sw.pruner.name not in PRUNERS:
        raise ConfigError("sweep.pruner.name", sw.pruner.name, f"allowed: {', '.join(PRUNERS)}")
    wf = sw.pruner.warmup_fraction
    if wf is not None and not (isinstance(wf, (int, float)) and not isinstance(wf, bool) and 0 <= wf < 1):
        raise ConfigError("sweep.pruner.warmup_fraction", wf, "must be in [0, 1) (a share of trainer.max_epochs) or null")
    _check_pruner_numbers(sw.pruner)
    for key in ("heartbeat_interval", "grace_period", "top_k"):
        _positive_int(sw[key], f"sweep.{key}")
    retries = sw.max_retry
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError("sweep.max_retry", retries, "must be an integer >= 0 (retries of a trial whose worker died or was interrupted)")
    pop = sw.population
    if pop != "auto" and (not isinstance(pop, int) or isinstance(pop, bool) or pop <= 0):
        raise ConfigError("sweep.population", pop, "must be an integer >= 1 (members trained at once) or auto")
    if sw.grace_period <= sw.heartbeat_interval:
        raise ConfigError("sweep.grace_period", sw.grace_period, "must be larger than sweep.heartbeat_interval")
    params = to_dict(sw.params)
    if sw.techniques is not None:
        if not sw.techniques:
            raise ConfigError("sweep.techniques", [], "needs at least one technique")
        twice = sorted(t for t, n in collections.Counter(sw.techniques).items() if n > 1)
        if twice:
            raise ConfigError(
                "sweep.techniques",
                list(sw.techniques),
                f"lists {', '.join(twice)} more than once; use sweep.trials_per_technique for more trials",
            )
        for tech in sw.techniques:
            if tech not in available("regularizer", _layers(cfg)) or tech == "none":
                raise ConfigError(
                    "sweep.techniques",
                    tech,
                    f"unknown technique; available: {', '.join(t for t in available('regularizer', _layers(cfg)) if t != 'none')}",
                )
            _check_technique(cfg, tech)
        _positive_int(sw.trials_per_technique, "sweep.trials_per_technique")
        chosen = ["none", *sw.techniques]
        kept = {}
        for k, v in params.items():  # conditional params of techniques not in the list are dropped
            if k == "regularizer":
                continue
            if isinstance(v, dict) and "regularizer" in (v.get("when") or {}):
                on = [t for t in v["when"]["regularizer"] if t in chosen]
                if not on:
                    continue
                v = {**v, "when": {**v["when"], "regularizer": on}}
            kept[k] = v
        params = {"regularizer": f"choice({', '.join(chosen)})", **kept}
    if not isinstance(sw.replicates, int) or sw.replicates < 0:
        raise ConfigError("sweep.replicates", sw.replicates, "must be an integer >= 0")
    for key in ("replicates", "replicates_max"):
        if isinstance(sw[key], int) and sw[key] > MAX_REPLICATES:  # 1e8 sat at setup, queueing one slot per seed
            raise ConfigError(
                f"sweep.{key}",
                sw[key],
                f"at most {MAX_REPLICATES:,} seeds per configuration: each replicate is a slot queued in the Optuna storage "
                "(13 ms each) and one training run",
            )
    if not 0 < sw.alpha < 1:
        raise ConfigError("sweep.alpha", sw.alpha, "must be in (0, 1)")
    if sw.replicates_max is not None and (not isinstance(sw.replicates_max, int) or sw.replicates_max < sw.replicates):
        raise ConfigError("sweep.replicates_max", sw.replicates_max, f"must be an integer >= sweep.replicates ({sw.replicates}) or null")
    if not isinstance(sw.margin, (int, float)) or isinstance(sw.margin, bool) or not math.isfinite(sw.margin) or sw.margin < 0:
        raise ConfigError("sweep.margin", sw.margin, "must be a number >= 0 (accuracy points, e.g. 0.5)")
    if not isinstance(sw.timing_repeats, int) or sw.timing_repeats < 0 or sw.timing_repeats in (1, 2):
        raise ConfigError(
            "sweep.timing_repeats",
            sw.timing_repeats,
            "must be 0 (no timing) or an integer >= 3 (fewer repeats give no usable interval for a cost ratio)",
        )
    refs = dict(sw.references or {})
    if sw.claim_reference is not None and refs and sw.claim_reference not in refs:  # no references at all: claim not replicated
        raise ConfigError("sweep.claim_reference", sw.claim_reference, f"must name a sweep.references entry: {', '.join(refs) or 'none'}")
    _check_replicate_seeds(cfg)
    if n_trials(sw) > MAX_TRIALS:
        field_name = "sweep.trials_per_technique" if sw.techniques else "sweep.n_trials"
        raise ConfigError(
            field_name,
            sw.trials_per_technique if sw.techniques else sw.n_trials,
            f"a study holds at most {MAX_TRIALS:,} trials ({n_trials(sw):,} asked): every trial is queued in the Optuna "
            "storage when the study is set up; split the question into several studies",
        )
    if not params:
        raise ConfigError("sweep.params", params, "a sweep needs at least one searched parameter")
    space = search_space.parse(params)
    probe = None
    for name, p in space.items():
        if name in GROUPS:
            for choice in getattr(p.distribution, "choices", ()):
                if choice not in available(name, _layers(cfg)):
                    raise ConfigError(
                        f"sweep.params.{name}", choice, f"unknown {name}; available: {', '.join(available(name, _layers(cfg)))}"
                    )
        elif OmegaConf.select(cfg, name, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"sweep.params.{name}", p.text, f"{name} is not a key of the config")
        else:
            probe = probe if probe is not None else _writable_copy(cfg)
            _check_searched_values(probe, p)
    if sw.axis is not None and sw.axis not in space:
        raise ConfigError("sweep.axis", sw.axis, f"must be one of the searched parameters: {', '.join(space)}")
    if sw.sampler.name == "grid":
        from optuna.distributions import CategoricalDistribution

        for p in space.values():
            if p.when or not (isinstance(p.distribution, CategoricalDistribution) or getattr(p.distribution, "step", None)):
                raise ConfigError(f"sweep.params.{p.name}", p.text, "the grid sampler needs unconditional choice() or range() parameters")
    return space


_ABSENT = object()


def check_fixed_configs(cfg: DictConfig, argv: list[str]) -> None:
    """The baseline's and every reference's overrides, composed as the trial and the replicates will compose them:
    a bad one (``sweep.baseline=['regularizer.q=1']``) failed trial 0 and the sweep exited 0 with no baseline, and
    a bad reference stopped the sweep at replication, after the whole search."""
    fixed = [("sweep.baseline", list(cfg.sweep.baseline))] if cfg.sweep.baseline else []
    fixed += [(f"sweep.references.{name}", list(ovs)) for name, ovs in (cfg.sweep.references or {}).items()]
    for field_name, overrides in fixed:
        try:
            load_with(argv, overrides)
        except ConfigError as exc:
            raise ConfigError(field_name, overrides, f"{exc.field}: {exc.allowed}") from None


def _writable_copy(cfg: DictConfig) -> DictConfig:
    probe = copy.deepcopy(cfg)
    OmegaConf.set_readonly(probe, False)
    return probe


def _check_searched_values(probe: DictConfig, p: Any) -> None:
    """Every value a trial could be given must be a valid config: each choice, both ends of a range or an interval
    (Optuna may suggest either end). A bound outside what the key allows (``interval(-1, 0.5)`` for a dropout rate,
    ``choice(0, 32)`` for a batch size) would otherwise fail trial after trial, and a sweep whose searched trials
    all failed would still end with exit 0. A continuous interval on an integer key is refused too."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    field_name = f"sweep.params.{p.name}"
    current = OmegaConf.select(probe, p.name)
    dist = p.distribution
    if isinstance(dist, FloatDistribution) and dist.step is None and isinstance(current, int) and not isinstance(current, bool):
        raise ConfigError(field_name, p.text, f"{p.name} is an integer: search it with range(...) or tag(int, interval(...))")
    if isinstance(dist, CategoricalDistribution):
        probes = [(f"choice {v!r}", v) for v in dist.choices]
    else:
        probes = [(f"low end {dist.low!r}", dist.low), (f"high end {dist.high!r}", dist.high)]
    for where, value in probes:
        try:
            OmegaConf.update(probe, p.name, value, merge=True)
            validate(probe)
        except ConfigError as exc:
            raise ConfigError(field_name, p.text, f"its {where} is invalid: {exc.field}: {exc.allowed}") from None
        except OmegaConfBaseException as exc:
            raise ConfigError(field_name, p.text, f"its {where} is invalid: {str(exc).splitlines()[0]}") from None
    OmegaConf.update(probe, p.name, current, merge=True)  # the next parameter is probed against the sweep's own config


def looks(sweep: Any) -> int:
    """Replication looks: 2 when sweep.replicates_max asks for a second one (each look tested at alpha/2)."""
    return 2 if (sweep.replicates_max or 0) > sweep.replicates else 1


def _layers(cfg: DictConfig) -> list[Path]:
    return [Path(p) for p in cfg.get("config_dirs") or []]


def replicate_seeds(cfg: DictConfig, count: int | None = None) -> list[int]:
    """The seeds replicates use: sweep.replicate_seed (default seed + 1000) onwards, never a search seed."""
    sw = cfg.sweep
    first = int(sw.replicate_seed) if sw.replicate_seed is not None else int(cfg.seed) + 1000
    n = count if count is not None else max(int(sw.replicates), int(sw.replicates_max or 0))
    return list(range(first, first + n))


def _check_replicate_seeds(cfg: DictConfig) -> None:
    sw = cfg.sweep
    if sw.replicate_seed is not None and (not isinstance(sw.replicate_seed, int) or not 0 <= sw.replicate_seed < 2**32):
        raise ConfigError("sweep.replicate_seed", sw.replicate_seed, "must be an integer in [0, 2**32) or null (seed + 1000)")
    searched = to_dict(sw.params).get("seed")
    search_seeds = {int(cfg.seed)}
    if searched is not None:  # a grid over seeds (data_size, depth): those are search seeds too
        from . import search_space

        dist = search_space.to_distribution("seed", str(searched.get("values") if isinstance(searched, dict) else searched))
        search_seeds |= {int(c) for c in getattr(dist, "choices", ())}
    clash = sorted(search_seeds & set(replicate_seeds(cfg))) if sw.replicates else []
    if clash:
        raise ConfigError(
            "sweep.replicate_seed",
            sw.replicate_seed,
            f"replicate seeds would reuse the search seed {clash[0]} "
            "(a winner's curse); choose seeds the search never used, e.g. null (seed + 1000)",
        )
