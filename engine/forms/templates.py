"""`{payload_key}` templates: how display blocks and defaults read the task payload."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

# `{{` and `}}` are literal braces (as in str.format); any other brace is left alone so
# markdown or JSON snippets in a text do not need escaping.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w.-]*)\}")

_MISSING = object()


def lookup(payload: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Return ``payload[key]``; a dotted key (``"employee.email"``) walks nested objects."""
    if key in payload:
        return payload[key]
    value: Any = payload
    for part in key.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return default
    return value


def format_value(value: Any) -> str:
    """Turn a payload value into display text (None is empty, lists are comma-joined)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return json.dumps(value, default=str, ensure_ascii=False)


def fill_template(
    template: str,
    payload: Mapping[str, Any],
    *,
    escape: Callable[[str], str] | None = None,
) -> str:
    """Replace each ``{key}`` of ``template`` with the payload value (missing keys give "").

    ``escape`` is applied to substituted values only, so a renderer can neutralise markup
    that comes from data (e.g. Slack's ``<!channel>``) while keeping the author's own markup.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        text = format_value(lookup(payload, match.group(1)))
        return escape(text) if escape else text

    return _PLACEHOLDER.sub(replace, template)


def has_placeholders(template: str) -> bool:
    """Tell whether ``template`` contains at least one ``{key}`` placeholder."""
    return any(m.group(1) for m in _PLACEHOLDER.finditer(template))
