"""Slack's limits on rendered views and messages, checked on the final JSON.

The Block Kit JSON schema catches most shape errors; these checks add what it cannot
express (unique ids across a view, block counts per surface) and name each problem by path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from engine.forms import limits as L


def _text(obj: Any) -> str:
    return obj.get("text", "") if isinstance(obj, dict) else ""


def _too_long(problems: list[str], where: str, text: str, limit: int) -> None:
    if len(text) > limit:
        problems.append(f"{where}: {len(text)} characters, more than {limit}")


def _elements(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if isinstance(block.get("element"), dict):
        yield block["element"]
    if isinstance(block.get("accessory"), dict):
        yield block["accessory"]
    if block.get("type") == "actions":
        yield from (e for e in block.get("elements", []) if isinstance(e, dict))


def _check_element(problems: list[str], where: str, element: dict[str, Any]) -> None:
    kind = element.get("type", "?")
    _too_long(problems, f"{where}.action_id", element.get("action_id", ""), L.ACTION_ID)
    _too_long(problems, f"{where}.placeholder", _text(element.get("placeholder")), L.PLACEHOLDER)
    options = element.get("options") or []
    cap = L.CHOICE_OPTIONS if kind in ("checkboxes", "radio_buttons") else L.SELECT_OPTIONS
    if len(options) > cap:
        problems.append(f"{where}: {kind} has {len(options)} options, more than {cap}")
    for j, opt in enumerate(options):
        _too_long(problems, f"{where}.options[{j}].text", _text(opt.get("text")), L.OPTION_TEXT)
        _too_long(problems, f"{where}.options[{j}].value", opt.get("value", ""), L.OPTION_VALUE)
    if kind == "button":
        _too_long(problems, f"{where}.text", _text(element.get("text")), L.BUTTON_TEXT)
        _too_long(problems, f"{where}.value", element.get("value", ""), L.BUTTON_VALUE)


def check_blocks(blocks: Sequence[dict[str, Any]], *, max_blocks: int, surface: str) -> list[str]:
    """Problems of ``blocks`` on a surface holding at most ``max_blocks`` blocks."""
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"{surface}: {len(blocks)} blocks, more than {max_blocks}")
    action_ids: list[str] = []
    for i, block in enumerate(blocks):
        where = f"blocks[{i}] ({block.get('type', '?')})"
        _too_long(problems, f"{where}.block_id", block.get("block_id", ""), L.BLOCK_ID)
        kind = block.get("type")
        if kind == "section":
            _too_long(problems, f"{where}.text", _text(block.get("text")), L.SECTION_TEXT)
            fields = block.get("fields") or []
            if len(fields) > L.SECTION_FIELDS:
                problems.append(f"{where}: {len(fields)} fields, more than {L.SECTION_FIELDS}")
            for j, f in enumerate(fields):
                _too_long(problems, f"{where}.fields[{j}]", _text(f), L.SECTION_FIELD)
        elif kind == "header":
            _too_long(problems, f"{where}.text", _text(block.get("text")), L.HEADER_TEXT)
        elif kind == "context":
            elements = block.get("elements") or []
            if len(elements) > L.CONTEXT_ELEMENTS:
                problems.append(
                    f"{where}: {len(elements)} elements, more than {L.CONTEXT_ELEMENTS}"
                )
        elif kind == "actions":
            elements = block.get("elements") or []
            if len(elements) > L.ACTIONS_ELEMENTS:
                problems.append(
                    f"{where}: {len(elements)} elements, more than {L.ACTIONS_ELEMENTS}"
                )
        elif kind == "input":
            _too_long(problems, f"{where}.label", _text(block.get("label")), L.LABEL)
            _too_long(problems, f"{where}.hint", _text(block.get("hint")), L.HINT)
        for element in _elements(block):
            _check_element(problems, f"{where}.element", element)
            if element.get("action_id"):
                action_ids.append(element["action_id"])
    counts = Counter(b["block_id"] for b in blocks if b.get("block_id"))
    problems += [f"{surface}: block_id {k!r} used {n} times" for k, n in counts.items() if n > 1]
    # Slack tells actions apart by (block_id, action_id); in our views both are the field
    # name, so an action_id repeated across blocks is a slip worth reporting.
    counts = Counter(action_ids)
    problems += [f"{surface}: action_id {k!r} used {n} times" for k, n in counts.items() if n > 1]
    return problems


def check_view_limits(view: dict[str, Any]) -> list[str]:
    """Problems of a modal or Home tab view that Slack would reject (empty when fine)."""
    problems: list[str] = []
    surface = view.get("type", "view")
    if surface == "modal":
        for key, limit in (
            ("title", L.MODAL_TITLE),
            ("submit", L.MODAL_BUTTON),
            ("close", L.MODAL_BUTTON),
        ):
            _too_long(problems, f"modal {key}", _text(view.get(key)), limit)
    _too_long(problems, "private_metadata", view.get("private_metadata", ""), L.PRIVATE_METADATA)
    _too_long(problems, "callback_id", view.get("callback_id", ""), L.CALLBACK_ID)
    problems += check_blocks(view.get("blocks") or [], max_blocks=L.VIEW_BLOCKS, surface=surface)
    return problems


def check_message_limits(blocks: Sequence[dict[str, Any]]) -> list[str]:
    """Problems of a message's blocks that Slack would reject (empty when fine)."""
    return check_blocks(blocks, max_blocks=L.MESSAGE_BLOCKS, surface="message")
