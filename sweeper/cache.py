"""The per-machine cache folder: files that are slow to make and the same for every run (the parsed bundled
dataset, split indices, an empty migrated MLflow store). Deleting it only costs the next start-up the time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SWEEPER_CACHE``, else ``$XDG_CACHE_HOME/sweeper``, else ``~/.cache/sweeper``."""
    base = os.environ.get("SWEEPER_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "sweeper")
    return Path(base)
