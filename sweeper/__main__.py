"""Entry point: ``python -m sweeper [overrides]`` (and the ``sweeper`` console script).

Without ``+sweep=...`` it trains one model; with it, it runs an Optuna study. Bad input prints
one line (``error: field: value ...; allowed ...``) and exits 2 before any store is touched.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m sweeper [--cfg] [--help] [--version] [key=value ...]

  python -m sweeper                                    one run with the defaults
  python -m sweeper regularizer=dropout regularizer.p=0.3 trainer.max_epochs=20 data=digits
  python -m sweeper regularizer=[dropout,l2,early_stopping]     techniques combined
  python -m sweeper +sweep=dropout                     an Optuna study (see conf/sweep/)
  python -m sweeper -m regularizer=dropout regularizer.p=0.1,0.2,0.3    an ad-hoc study of exactly these values
  python -m sweeper -m regularizer=l2 "regularizer.l2=tag(log,interval(1e-5,1e-2))" sweep.n_trials=10
  python -m sweeper -m seed=1,2,3                      these seeds as replicates: mean and 95% CI
  -m, --multirun   Hydra sweep values (a,b,c  choice()  range()  interval()) start a study of exactly those
                   parameters: a grid for lists and ranges, the configured sampler when an interval is present
  --version, -V     print the versions of sweeper, torch, lightning, optuna, mlflow and hydra-core
  --cfg, -c [job]   print the resolved config and exit (Hydra's `--cfg job`; `all` is the same)
  --config-dir DIR   a team's config folder (sweep/, data/, model/, ...) layered over the shipped configs;
                     also ./conf and $SWEEPER_CONFIG_DIR
Config groups (group=option): {groups}
"""


def _usage(argv: list[str]) -> str:
    from . import conf_layers
    from .config import GROUPS, available

    layers = conf_layers.overlays(conf_layers.split_argv(argv)[1])
    groups = "".join(f"\n  {g}: {', '.join(available(g, layers))}" for g in GROUPS)
    where = "".join(f"\n  {p}" for p in reversed(layers)) + f"\n  {conf_layers.SHIPPED} (shipped)"
    return USAGE.format(groups=groups) + f"Config folders, highest precedence first:{where}\n"


CFG_FLAGS = ("--cfg", "-c")
CFG_VALUES = ("job", "all", "hydra")  # Hydra's own values for --cfg


def _config_flag(argv: list[str]) -> tuple[list[str], bool]:
    """(argv without ``--cfg [job|all]``, whether it was given). Hydra apps take ``--cfg job`` (or ``-c job``, ``all``,
    ``hydra``); sweeper composes with Hydra's compose API, so ``job`` and ``all`` print the same resolved config and
    ``hydra`` (Hydra's own runtime config, which a composed config does not have) is refused in one line."""
    from .errors import ConfigError

    rest, show, i = [], False, 0
    while i < len(argv):
        a = argv[i]
        if a in CFG_FLAGS:
            show = True
            if i + 1 < len(argv) and argv[i + 1] in CFG_VALUES:
                i += 1
                if argv[i] == "hydra":
                    why = "sweeper has no Hydra runtime config to print (it composes configs); use --cfg or --cfg job"
                    raise ConfigError("--cfg", "hydra", why)
        else:
            rest.append(a)
        i += 1
    return rest, show


OPTIONS = "--help, --version, --cfg [job], -m/--multirun, --config-dir DIR"
PACKAGES = ("torch", "lightning", "optuna", "mlflow", "hydra-core")


def _version() -> str:
    """The versions that decide a run's numbers, from the installed metadata (importing Lightning costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"sweeper {of('sweeper')} (" + ", ".join(f"{p} {of(p)}" for p in PACKAGES) + ")"


def _check_options(argv: list[str]) -> None:
    """An option sweeper does not take is one line naming it (Hydra's parser called ``--foo`` a lexer error)."""
    from .conf_layers import split_argv
    from .errors import ConfigError
    from .multirun import MULTIRUN_FLAGS

    for a in split_argv(argv)[0]:  # --config-dir and its folder taken out by the parser that reads them
        if a.startswith("-") and a not in (*MULTIRUN_FLAGS, *CFG_FLAGS):
            raise ConfigError("option", a, f"unknown option; sweeper takes {OPTIONS} and key=value overrides (see --help)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        from .errors import ConfigError as _ConfigError

        try:
            print(_usage(argv))
        except _ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if "--version" in argv or "-V" in argv:
        print(_version())
        return 0
    from .errors import ConfigError, StoreUnavailable
    from .masking import mask, printable

    try:
        _check_options(argv)
        from . import config, multirun

        if multirun.requested(argv):
            argv = multirun.to_sweep_argv(argv)
        else:
            multirun.refuse_without_flag(argv)
        argv, show = _config_flag(argv)
        cfg = config.load(argv)
        if show:
            from omegaconf import OmegaConf

            print(mask(OmegaConf.to_yaml(cfg)))
            return 0
        from . import runtime

        runtime.setup()
        if cfg.sweep is not None:
            from .pipeline import run_sweep

            return run_sweep(cfg, argv)
        from .run import run_single

        return run_single(cfg)
    except ConfigError as exc:
        print(f"error: {printable(mask(str(exc)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from .runtime import interrupt_status, interrupted_by

        print(f"interrupted ({interrupted_by()})", file=sys.stderr)
        return interrupt_status()
    except StoreUnavailable as exc:
        print(f"error: {printable(mask(str(exc)))}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    status = main()
    from .runtime import freeze_heap

    freeze_heap()  # nothing is left to collect: skip the collector's full pass at interpreter exit
    sys.exit(status)
