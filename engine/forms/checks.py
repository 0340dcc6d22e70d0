"""Load-time checks of a form definition against Slack's Block Kit limits and common slips.

Each problem is one sentence naming the form, the page or field, and the limit, so the
workflow loader can print them as they are.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from engine.forms import limits
from engine.forms.choices import Checkboxes, ChoiceField, MultiSelect, Radio
from engine.forms.display import Display, Facts, Links, Markdown
from engine.forms.fields import DateTime, Field, Number, Text, UserPicker

#: Kinds whose Slack element has no placeholder.
_NO_PLACEHOLDER = (Checkboxes, Radio, DateTime)


def block_count(item: Field | Display) -> int:
    """How many Block Kit blocks ``item`` renders to (bot/ renders exactly this many)."""
    if isinstance(item, Markdown):
        return max(1, math.ceil(len(item.text) / limits.SECTION_TEXT))
    if isinstance(item, Facts):
        return max(1, math.ceil(len(item.facts) / limits.SECTION_FIELDS))
    if isinstance(item, Links):
        size = sum(len(label) + len(url) + 4 for label, url in item.links)
        return max(1, math.ceil(size / limits.SECTION_TEXT))
    return 1


def check_length(problems: list[str], where: str, what: str, text: Any, limit: int) -> None:
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: {what} must be a non-empty text")
    elif len(text) > limit:
        problems.append(
            f"{where}: {what} is {len(text)} characters long; Slack allows at most {limit}"
        )


def check_field(where: str, f: Field) -> list[str]:
    """Problems of one field's definition; ``where`` prefixes each message."""
    problems: list[str] = []
    if not isinstance(f.name, str) or not f.name:
        problems.append(f"{where}: name must be a non-empty text")
    elif len(f.name) > limits.BLOCK_ID:
        problems.append(
            f"{where}: name is {len(f.name)} characters long; it is the Slack block_id and "
            f"action_id, at most {limits.BLOCK_ID}"
        )
    check_length(problems, where, "label", f.label, limits.LABEL)
    if f.hint is not None:
        check_length(problems, where, "hint", f.hint, limits.HINT)
    if f.placeholder is not None:
        if isinstance(f, _NO_PLACEHOLDER):
            problems.append(f"{where}: Slack shows no placeholder on a {f.kind} field")
        else:
            check_length(problems, where, "placeholder", f.placeholder, limits.PLACEHOLDER)
    if f.default_from is not None and (not isinstance(f.default_from, str) or not f.default_from):
        problems.append(f"{where}: default_from must name a payload key")
    if isinstance(f, Text):
        problems += _check_text(where, f)
    elif isinstance(f, Number):
        problems += _check_number(where, f)
    elif isinstance(f, ChoiceField):
        problems += _check_choice(where, f)
    if isinstance(f, MultiSelect | UserPicker) and f.max_selected is not None:
        if f.max_selected < 1:
            problems.append(f"{where}: max_selected must be at least 1")
    if f.default is not None and not problems:
        error = f.value_error(f.coerce(f.default))
        if error:
            problems.append(f"{where}: default {f.default!r} is not a valid answer: {error}")
    return problems


def _check_text(where: str, f: Text) -> list[str]:
    problems = []
    for what in ("min_length", "max_length"):
        value = getattr(f, what)
        if value is not None and not 0 <= value <= limits.TEXT_INPUT:
            problems.append(f"{where}: {what} must be between 0 and {limits.TEXT_INPUT}")
    if f.min_length is not None and f.max_length is not None and f.min_length > f.max_length:
        problems.append(f"{where}: min_length {f.min_length} exceeds max_length {f.max_length}")
    return problems


def _check_number(where: str, f: Number) -> list[str]:
    problems = []
    if f.min is not None and f.max is not None and f.min > f.max:
        problems.append(f"{where}: min {f.min} exceeds max {f.max}")
    for what in ("min", "max"):
        value = getattr(f, what)
        if value is not None and not f.decimal and not float(value).is_integer():
            problems.append(f"{where}: {what} {value} is not whole but decimal=False")
    return problems


def _check_choice(where: str, f: ChoiceField) -> list[str]:
    problems = []
    options = f.choices
    visible = isinstance(f, Checkboxes | Radio)
    cap = limits.CHOICE_OPTIONS if visible else limits.SELECT_OPTIONS
    if f.options_from is not None:
        if visible:
            problems.append(f"{where}: a {f.kind} field cannot load options_from a function")
        if options:
            problems.append(f"{where}: give options or options_from, not both")
        return problems
    if not options:
        problems.append(f"{where}: has no options")
    elif len(options) > cap:
        problems.append(
            f"{where}: has {len(options)} options; a Slack {f.kind} holds at most {cap}"
            + ("" if visible else " (use options_from for a type-ahead select)")
        )
    for option in options:
        check_length(
            problems, where, f"option label {option.label[:40]!r}", option.label, limits.OPTION_TEXT
        )
        check_length(
            problems,
            where,
            f"option value {option.value[:40]!r}",
            option.value,
            limits.OPTION_VALUE,
        )
    for value, count in Counter(o.value for o in options).items():
        if count > 1:
            problems.append(f"{where}: option value {value!r} is used {count} times")
    return problems


def check_display(where: str, item: Display) -> list[str]:
    problems: list[str] = []
    if isinstance(item, Markdown):
        if not item.text.strip():
            problems.append(f"{where}: a Markdown block has no text")
    elif isinstance(item, Facts):
        if not item.facts:
            problems.append(f"{where}: a Facts block has no facts")
        for label, _value in item.facts:
            # A fact renders as "*label*\nvalue" in one section field.
            check_length(problems, where, f"fact label {label[:40]!r}", label, limits.SECTION_FIELD // 2)
    elif isinstance(item, Links):
        if not item.links:
            problems.append(f"{where}: a Links block has no links")
        for label, url in item.links:
            check_length(problems, where, "link label", label, limits.OPTION_TEXT * 4)
            if not url.startswith(("http://", "https://", "mailto:", "{")):
                problems.append(f"{where}: link {label!r} has url {url!r}, not http(s)/mailto")
    return problems
