"""Where configs come from: the shipped ``conf/`` plus a team's own config folders layered over it.

Precedence, highest first: ``--config-dir DIR`` (Hydra's flag; the last one given wins), then
``$SWEEPER_CONFIG_DIR`` (``os.pathsep``-separated, the last entry wins), then ``./conf`` in the
working directory, then the configs shipped with sweeper. A file of the same group and name in a
higher layer replaces the lower one (``conf/sweep/dropout.yaml`` in a team's repo replaces the
shipped dropout sweep). Hydra's ``hydra.searchpath`` searches its extra entries *after* the
primary config folder, so shipped configs would always win a clash; instead the layers are merged
into one folder per process (cached), which Hydra then composes and lists options from.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError

SHIPPED = Path(__file__).resolve().parent / "conf"
ENV = "SWEEPER_CONFIG_DIR"
_MERGED: dict[tuple, Path] = {}
_OPTIONS: dict[tuple[Path, str], list[str]] = {}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the other arguments, the --config-dir/-cd folders in order)."""
    rest, dirs, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config-dir", "-cd"):
            if i + 1 >= len(argv):
                raise ConfigError("--config-dir", None, "needs a folder: --config-dir DIR")
            dirs.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--config-dir="):
            dirs.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return rest, dirs


def overlays(cli_dirs: list[str] | tuple[str, ...] = ()) -> list[Path]:
    """Team config folders in increasing precedence (the shipped folder excluded). A named folder that does not
    exist is a one-line error; ./conf is used only when it exists."""
    out: list[Path] = []
    local = Path("conf")
    if local.is_dir() and not local.resolve().samefile(SHIPPED):
        out.append(local.resolve())
    for raw in [d for d in os.environ.get(ENV, "").split(os.pathsep) if d]:
        out.append(_folder(ENV, raw))
    for raw in cli_dirs:
        out.append(_folder("--config-dir", raw))
    return out


def _folder(field: str, raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ConfigError(field, raw, "is not an existing folder of configs (group folders such as sweep/, data/, model/)")
    return path.resolve()


def root(layers: list[Path]) -> Path:
    """One folder holding every layer's files, higher layers winning; the shipped folder itself when there are none."""
    if not layers:
        return SHIPPED
    key = tuple((str(p), max((f.stat().st_mtime_ns for f in p.rglob("*.yaml")), default=0)) for p in layers)
    if key not in _MERGED:
        merged = Path(tempfile.mkdtemp(prefix="sweeper-conf-")) / "conf"
        atexit.register(shutil.rmtree, merged.parent, True)  # the merged copy lives as long as this process
        shutil.copytree(SHIPPED, merged)
        for layer in layers:
            for f in layer.rglob("*.yaml"):
                dst = merged / f.relative_to(layer)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst)
        _MERGED[key] = merged
    return _MERGED[key]


def options(group: str, layers: list[Path]) -> list[str]:
    """The group's options as Hydra's config repository lists them (team options included)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    folder = root(layers)
    if (folder, group) not in _OPTIONS:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
                _OPTIONS[(folder, group)] = sorted(GlobalHydra.instance().config_loader().get_group_options(group))
        finally:
            GlobalHydra.instance().clear()
    return _OPTIONS[(folder, group)]


def origin(group: str, option: str, layers: list[Path]) -> Path:
    """The file a group option comes from: the highest layer that has it, else the shipped one."""
    for layer in reversed(layers):
        if (layer / group / f"{option}.yaml").is_file():
            return layer / group / f"{option}.yaml"
    return SHIPPED / group / f"{option}.yaml"
