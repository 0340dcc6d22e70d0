"""Block Kit building blocks: text objects, options, and the display items of a form.

Every builder clips its texts to Slack's limits, so data from a payload can never make
Slack reject a view; load-time checks (``Form.check``) report the author's own overflows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.forms import Display, Facts, Links, Markdown, Option
from engine.forms import limits as L

ELLIPSIS = "…"


def clip(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(text: str, limit: int = L.SECTION_TEXT) -> dict[str, Any]:
    """A plain_text object (never empty: Slack rejects empty texts)."""
    return {"type": "plain_text", "text": clip(text, limit) or " ", "emoji": True}


def mrkdwn(text: str, limit: int = L.SECTION_TEXT) -> dict[str, Any]:
    """A mrkdwn text object."""
    return {"type": "mrkdwn", "text": clip(text, limit) or " "}


def option(o: Option) -> dict[str, Any]:
    """An option object of a select, checkboxes or radio buttons element."""
    return {
        "text": plain_text(o.label, L.OPTION_TEXT),
        "value": clip(o.value, L.OPTION_VALUE),
    }


def section(text: str, *, block_id: str | None = None) -> dict[str, Any]:
    """A section block of mrkdwn text."""
    block: dict[str, Any] = {"type": "section", "text": mrkdwn(text)}
    if block_id:
        block["block_id"] = block_id
    return block


def header(text: str) -> dict[str, Any]:
    """A header block."""
    return {"type": "header", "text": plain_text(text, L.HEADER_TEXT)}


def context(text: str) -> dict[str, Any]:
    """A context block of one mrkdwn line."""
    return {"type": "context", "elements": [mrkdwn(text)]}


def button(text: str, action_id: str, value: str, *, style: str | None = None) -> dict[str, Any]:
    """A button element."""
    element: dict[str, Any] = {
        "type": "button",
        "text": plain_text(text, L.BUTTON_TEXT),
        "action_id": action_id,
        "value": clip(value, L.BUTTON_VALUE),
    }
    if style:
        element["style"] = style
    return element


# --- markdown → Slack mrkdwn ----------------------------------------------------------------

_CODE = re.compile(r"(```.*?```|`[^`\n]+`)", re.S)
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?!\*)")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.M)
_BOLD_MARK = "\x00"


def _convert(text: str) -> str:
    text = _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1)}>", text)
    # Bold first, through a marker, so its stars are not read as italics afterwards.
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    text = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1)}{_BOLD_MARK}", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _ITALIC.sub(lambda m: f"_{m.group(1)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    return text.replace(_BOLD_MARK, "*")


def to_mrkdwn(markdown: str) -> str:
    """Convert common Markdown (bold, italics, links, headings, bullets) to Slack mrkdwn;
    code spans and blocks are kept as they are."""
    parts = _CODE.split(markdown)
    return "".join(part if i % 2 else _convert(part) for i, part in enumerate(parts))


def chunks(text: str, limit: int = L.SECTION_TEXT) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters, at line breaks when possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > 0 else limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    if text.strip() or not pieces:
        pieces.append(text)
    return pieces


# --- display items --------------------------------------------------------------------------


def facts_blocks(facts: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Section blocks showing label/value pairs as a two-column grid (10 per section).

    Values must already be mrkdwn-safe (escaped).
    """
    blocks = []
    for start in range(0, len(facts), L.SECTION_FIELDS):
        fields = [
            mrkdwn(f"*{escape(label)}*\n{value or '—'}", L.SECTION_FIELD)
            for label, value in facts[start : start + L.SECTION_FIELDS]
        ]
        blocks.append({"type": "section", "fields": fields})
    return blocks


def links_text(links: Sequence[tuple[str, str]]) -> str:
    """Mrkdwn lines, one link each."""
    return "\n".join(
        f":link: <{url.replace('|', '%7C').replace('>', '%3E')}|{escape(label)}>"
        for label, url in links
    )


def display_blocks(item: Display, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The blocks of a read-only display item, filled from ``payload`` (data escaped)."""
    if isinstance(item, Markdown):
        text = item.__class__(to_mrkdwn(item.text)).render(payload, escape=escape)
        return [section(piece) for piece in chunks(text)]
    if isinstance(item, Facts):
        return facts_blocks(item.render(payload, escape=escape))
    if isinstance(item, Links):
        rendered = item.render(payload)
        if not rendered:
            return []
        return [section(piece) for piece in chunks(links_text(rendered))]
    raise TypeError(f"unknown display item {item!r}")
