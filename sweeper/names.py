"""Names that become parts of file paths (study, experiment, reference names): validated, never trusted.

A study name ends up in ``reports/<study>/``, in MLflow artifact locations and in run names; a name
like ``../../elsewhere/evil`` would write outside the configured folders. Allowed: letters, digits,
``.``, ``_`` and ``-``; not starting with a dot; at most 128 characters.
"""

from __future__ import annotations

import re

from .errors import ConfigError

_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
RULE = "use letters, digits, '.', '_' and '-' only (no path separators, no leading dot, at most 128 characters)"


def check_name(field: str, value: object) -> str:
    """The name itself, or a one-line ConfigError naming the field."""
    if not isinstance(value, str) or not _SAFE.fullmatch(value):
        raise ConfigError(field, value, RULE)
    return value
