"""Mask passwords in URLs before they reach MLflow params, tags, artifacts or the terminal."""

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KEYVAL = re.compile(r"(?i)(password|passwd|pwd)=([^&\s;]+)")


def printable(text: str) -> str:
    """Control characters (a NUL byte, a terminal escape) shown as escapes, never sent to the terminal raw."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def mask(text: str) -> str:
    """Replace the password part of every URL (and `password=` query values) with ***."""
    if not isinstance(text, str):
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KEYVAL.sub(lambda m: f"{m.group(1)}=***", text)
