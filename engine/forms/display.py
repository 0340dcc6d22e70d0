"""Read-only display blocks of a form: markdown text, facts and links, filled from the payload.

They render to plain data (strings and pairs) so each surface (Slack in bot/, HTML in the web
console) turns them into its own markup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from engine.forms.errors import FormError
from engine.forms.templates import fill_template, format_value

Escape: TypeAlias = Callable[[str], str]


class Display:
    """Base of the read-only blocks (they produce no answer)."""


@dataclass(frozen=True)
class Markdown(Display):
    """Markdown text; ``{payload_key}`` placeholders are filled from the task payload."""

    text: str

    def render(self, payload: Mapping[str, Any], *, escape: Escape | None = None) -> str:
        """The text with placeholders filled."""
        return fill_template(self.text, payload, escape=escape)


def _pairs(items: Any, what: str) -> list[tuple[str, Any]]:
    if isinstance(items, Mapping):
        return [(str(k), v) for k, v in items.items()]
    pairs = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise FormError(f"{what} entries must be (label, value) pairs, got {item!r}")
        pairs.append((str(item[0]), item[1]))
    return pairs


@dataclass(frozen=True, init=False)
class Facts(Display):
    """Label/value facts (``{"Amount": "{amount}"}`` or a list of pairs), shown as a grid.

    String values are templates; any other value is shown as is.
    """

    facts: tuple[tuple[str, Any], ...]

    def __init__(self, facts: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> None:
        object.__setattr__(self, "facts", tuple(_pairs(facts, "Facts")))

    def render(
        self, payload: Mapping[str, Any], *, escape: Escape | None = None
    ) -> list[tuple[str, str]]:
        """The (label, value text) pairs with placeholders filled."""
        out = []
        for label, value in self.facts:
            if isinstance(value, str):
                text = fill_template(value, payload, escape=escape)
            else:
                text = format_value(value)
                text = escape(text) if escape else text
            out.append((label, text))
        return out


@dataclass(frozen=True, init=False)
class Links(Display):
    """Links to documents: ``[(label, url), ...]``; both may hold ``{payload_key}`` templates."""

    links: tuple[tuple[str, str], ...]

    def __init__(self, links: Sequence[tuple[str, str]] | Mapping[str, str]) -> None:
        pairs = _pairs(links, "Links")
        for label, url in pairs:
            if not isinstance(url, str):
                raise FormError(f"Links: the url of {label!r} must be a str, got {url!r}")
        object.__setattr__(self, "links", tuple((label, str(url)) for label, url in pairs))

    def render(self, payload: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The (label, url) pairs with placeholders filled; links with an empty url are left out."""
        out = []
        for label, url in self.links:
            filled = fill_template(url, payload).strip()
            if filled:
                out.append((fill_template(label, payload), filled))
        return out
