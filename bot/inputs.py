"""Form fields as Block Kit input elements, and their submitted state back as answers.

The block_id and the action_id of a field are both its name, so a submission's
``view.state.values[name][name]`` is that field's state whatever the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bot.blocks import clip, option, plain_text
from engine.forms import ChoiceField, Field, MultiSelect, Number, Option, UserPicker, parse_number
from engine.forms import limits as L
from engine.forms.fields import whole

Builder = Callable[[Field, Any], dict[str, Any]]


def _number_text(value: int | float) -> str:
    # Slack wants plain decimal digits: no exponent ("1e-05") and no trailing ".0".
    text = format(Decimal(repr(whole(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _option_for(f: ChoiceField, value: str) -> dict[str, Any]:
    for o in f.choices:
        if o.value == value:
            return option(o)
    # An options_from value: the label is not known without a query, so show the value.
    return option(Option(value, value))


def _text(f: Field, initial: Any) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "plain_text_input"}
    if f.kind == "long_text":
        element["multiline"] = True
    for attr in ("min_length", "max_length"):
        value = getattr(f, attr, None)
        if value is not None:
            element[attr] = max(value, 1) if attr == "max_length" else value
    if initial is not None:
        element["initial_value"] = initial
    return element


def _number(f: Field, initial: Any) -> dict[str, Any]:
    assert isinstance(f, Number)
    element: dict[str, Any] = {"type": "number_input", "is_decimal_allowed": f.decimal}
    for attr in ("min", "max"):
        value = getattr(f, attr)
        if value is not None:
            element[f"{attr}_value"] = _number_text(value)
    if initial is not None:
        element["initial_value"] = _number_text(initial)
    return element


def _simple(element_type: str, initial_key: str) -> Builder:
    def build(f: Field, initial: Any) -> dict[str, Any]:
        element: dict[str, Any] = {"type": element_type}
        if initial is not None:
            element[initial_key] = initial
        return element

    return build


def _datetime(f: Field, initial: Any) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "datetimepicker"}
    if initial is not None:
        element["initial_date_time"] = int(dt.datetime.fromisoformat(initial).timestamp())
    return element


def _select(f: Field, initial: Any) -> dict[str, Any]:
    assert isinstance(f, ChoiceField)
    multi = f.is_multi
    if f.options_from is not None:
        element: dict[str, Any] = {
            "type": "multi_external_select" if multi else "external_select",
            "min_query_length": 0,
        }
    else:
        element = {
            "type": "multi_static_select" if multi else "static_select",
            "options": [option(o) for o in f.choices[: L.SELECT_OPTIONS]],
        }
    if isinstance(f, MultiSelect) and f.max_selected:
        element["max_selected_items"] = f.max_selected
    if initial:
        if multi:
            element["initial_options"] = [_option_for(f, v) for v in initial]
        else:
            element["initial_option"] = _option_for(f, initial)
    return element


def _choice_buttons(f: Field, initial: Any) -> dict[str, Any]:
    assert isinstance(f, ChoiceField)
    multi = f.is_multi
    element: dict[str, Any] = {
        "type": "checkboxes" if multi else "radio_buttons",
        "options": [option(o) for o in f.choices[: L.CHOICE_OPTIONS]],
    }
    if initial:
        if multi:
            element["initial_options"] = [_option_for(f, v) for v in initial]
        else:
            element["initial_option"] = _option_for(f, initial)
    return element


def _slack_ids(values: Any) -> list[str]:
    # A user picker answers an email too (given without Slack); Slack's picker takes ids only.
    return [v for v in (values if isinstance(values, list) else [values])
            if isinstance(v, str) and v[:1] in ("U", "W") and v.upper() == v]


def _users(f: Field, initial: Any) -> dict[str, Any]:
    assert isinstance(f, UserPicker)
    if f.multi:
        element: dict[str, Any] = {"type": "multi_users_select"}
        if f.max_selected:
            element["max_selected_items"] = f.max_selected
        if _slack_ids(initial or []):
            element["initial_users"] = _slack_ids(initial)
    else:
        element = {"type": "users_select"}
        if initial and _slack_ids(initial):
            element["initial_user"] = initial
    return element


_BUILDERS: dict[str, Builder] = {
    "text": _text,
    "long_text": _text,
    "number": _number,
    "email": _simple("email_text_input", "initial_value"),
    "url": _simple("url_text_input", "initial_value"),
    "date": _simple("datepicker", "initial_date"),
    "datetime": _datetime,
    "select": _select,
    "multi_select": _select,
    "radio": _choice_buttons,
    "checkboxes": _choice_buttons,
    "user": _users,
}

#: Element types that take no placeholder.
_NO_PLACEHOLDER = {"checkboxes", "radio_buttons", "datetimepicker"}


def input_element(f: Field, initial: Any = None) -> dict[str, Any]:
    """The input element of field ``f`` with initial value ``initial`` (an answer value)."""
    try:
        build = _BUILDERS[f.kind]
    except KeyError:
        raise TypeError(f"no Slack element for field kind {f.kind!r}") from None
    element = build(f, initial)
    element["action_id"] = f.name
    if f.placeholder and element["type"] not in _NO_PLACEHOLDER:
        element["placeholder"] = plain_text(f.placeholder, L.PLACEHOLDER)
    return element


def input_block(f: Field, initial: Any = None) -> dict[str, Any]:
    """The input block of field ``f``: label, hint, optional flag and element."""
    block: dict[str, Any] = {
        "type": "input",
        "block_id": f.name,
        "label": plain_text(f.label, L.LABEL),
        "element": input_element(f, initial),
    }
    if f.hint:
        block["hint"] = plain_text(f.hint, L.HINT)
    if not f.required:
        block["optional"] = True
    return block


def answer_from_state(f: Field, state: dict[str, Any] | None) -> Any:
    """The answer of field ``f`` from its element state in ``view.state.values``."""
    if not state:
        return f.empty_value()
    kind = state.get("type")
    if kind in ("plain_text_input", "email_text_input", "url_text_input"):
        value = state.get("value")
        return value if value not in (None, "") else None
    if kind == "number_input":
        value = state.get("value")
        if value in (None, ""):
            return None
        number = parse_number(value)
        return number if number is not None else value  # validation reports the bad text
    if kind == "datepicker":
        return state.get("selected_date") or None
    if kind == "datetimepicker":
        stamp = state.get("selected_date_time")
        return None if stamp is None else dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat()
    if kind in ("static_select", "external_select", "radio_buttons"):
        selected = state.get("selected_option")
        return selected["value"] if selected else None
    if kind in ("multi_static_select", "multi_external_select", "checkboxes"):
        return [o["value"] for o in state.get("selected_options") or []]
    if kind == "users_select":
        return state.get("selected_user") or None
    if kind == "multi_users_select":
        return list(state.get("selected_users") or [])
    # An element type this module never renders: keep the raw value for validation to judge.
    return clip(str(state.get("value", "")), L.TEXT_INPUT) or None
