"""The package's shape: imports run one way, every module imports alone, nothing global happens at import."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sweeper"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PKG.rglob("*.py") if p.name != "__main__.py")


def internal_imports(path: Path) -> set[str]:
    """Every sweeper module this file imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("sweeper")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("sweeper"):
                target = node.module
            else:
                continue
            for alias in node.names:  # `from . import config` names a module; `from .x import y` names x
                out.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    return out - {name}


def test_import_graph_has_no_cycle():
    graph = {module_name(p): internal_imports(p) for p in PKG.rglob("*.py") if p.name != "__main__.py"}
    assert all(dep in graph for deps in graph.values() for dep in deps), graph
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for mod in graph:
        if mod not in state:
            visit(mod, [mod])
    # the layering the package relies on: the engine never reaches up into sweeps or reports
    for low in ("sweeper.trial", "sweeper.module", "sweeper.data", "sweeper.models", "sweeper.regularizers", "sweeper.tracking"):
        assert not graph[low] & {"sweeper.pipeline", "sweeper.worker", "sweeper.study", "sweeper.report"}, low


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module imported first, in a process where no other sweeper module is loaded yet (one subprocess:
    third-party imports stay cached, sweeper's own modules are purged before each one)."""
    code = f"""
import importlib, sys
failures = {{}}
for m in {MODULES!r}:
    for loaded in [k for k in sys.modules if k == "sweeper" or k.startswith("sweeper.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(m)
    except Exception as exc:
        failures[m] = repr(exc)
print(failures)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "{}"


@pytest.mark.slow
def test_importing_the_package_changes_no_global_state():
    """Warning filters, logger levels and the environment change only in runtime.setup(), called by main()."""
    code = f"""
import importlib, json, logging, os, warnings
import lightning.pytorch, mlflow, optuna, sklearn, sklearn.model_selection, scipy.stats  # their own import-time effects are not ours
names = ("mlflow", "alembic", "lightning.pytorch", "lightning.fabric")
before = (list(map(str, warnings.filters)), [logging.getLogger(n).level for n in names], dict(os.environ),
          optuna.logging.get_verbosity())
for m in {MODULES!r}:
    importlib.import_module(m)
after = (list(map(str, warnings.filters)), [logging.getLogger(n).level for n in names], dict(os.environ),
         optuna.logging.get_verbosity())
from sweeper import runtime
runtime.setup()
print(json.dumps({{"unchanged": before == after, "nvml": "PYTORCH_NVML_BASED_CUDA_CHECK" in os.environ,
                  "mlflow_level": logging.getLogger("mlflow").level}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"unchanged": True, "nvml": False, "mlflow_level": 30}
