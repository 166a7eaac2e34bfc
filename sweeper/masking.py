"""Mask passwords in URLs before they reach MLflow params, tags, artifacts or the terminal."""

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KEYVAL = re.compile(r"(?i)(password|passwd|pwd)=([^&\s;]+)")


def mask(text: str) -> str:
    """Replace the password part of every URL (and `password=` query values) with ***."""
    if not isinstance(text, str):
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KEYVAL.sub(lambda m: f"{m.group(1)}=***", text)
