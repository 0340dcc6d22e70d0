"""A form as a Slack modal, a modal submission back as answers, and validation errors.

``render_modal`` and ``parse_submission`` agree on ids: each field's input block has
``block_id == action_id == field.name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot import messages as texts
from bot.blocks import clip, context, display_blocks, escape, option, plain_text, section
from bot.cards import (
    approval_message_blocks,
    assignment_message_blocks,
    payload_facts,
    resolved_message_blocks,
)
from bot.inputs import answer_from_state, input_block
from bot.limits import check_message_limits, check_view_limits
from engine.forms import (
    ChoiceField,
    Display,
    Field,
    Form,
    Option,
    OptionSpec,
    Page,
    fill_template,
)
from engine.forms import limits as L

__all__ = [
    "approval_message_blocks",
    "assignment_message_blocks",
    "check_message_limits",
    "check_view_limits",
    "errors_response",
    "parse_submission",
    "payload_facts",
    "render_modal",
    "render_options",
    "resolved_message_blocks",
    "suggest_options",
]


def render_modal(
    form: Form,
    payload: Mapping[str, Any],
    *,
    page: str | Page | None = None,
    answers: Mapping[str, Any] | None = None,
    callback_id: str,
    private_metadata: str,
    errors: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The modal view of ``page`` (default: the first page that applies) of ``form``.

    Initial values come from ``answers`` (earlier answers, e.g. when going back a page),
    then each field's ``default_from`` payload key, then its ``default``. ``errors`` (by
    field name) show under their fields, for surfaces that re-render instead of answering
    ``response_action: errors``. The submit button reads ``form.next_label`` while pages
    follow, ``form.submit_label`` on the last one.
    """
    answers = answers or {}
    current = form.page(page) if page is not None else form.first_page(answers)
    initial = form.initial_values(payload, answers, page=current)
    blocks: list[dict[str, Any]] = []
    for item in current.fields:
        if isinstance(item, Field):
            blocks.append(input_block(item, initial.get(item.name)))
            if errors and item.name in errors:
                blocks.append(context(texts.ERROR_PREFIX + escape(errors[item.name])))
        elif isinstance(item, Display):
            blocks.extend(display_blocks(item, payload))
    if not blocks:
        blocks.append(section(" "))  # Slack rejects a view without blocks
    title = fill_template(current.title or form.title, payload)
    submit = form.next_label if form.has_later_pages(current) else form.submit_label
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": private_metadata,
        "title": plain_text(title, L.MODAL_TITLE),
        "submit": plain_text(submit, L.MODAL_BUTTON),
        "close": plain_text(form.close_label, L.MODAL_BUTTON),
        "blocks": blocks,
    }


def parse_submission(
    form: Form, view_state_values: Mapping[str, Any], page: str | Page | None = None
) -> dict[str, Any]:
    """The answers of ``page`` (default: the first) from ``view["state"]["values"]``.

    Every input field of the page gets a key: None (``[]`` for list kinds) when left empty.
    """
    current = form.page(page)
    answers: dict[str, Any] = {}
    for f in current.inputs:
        block = view_state_values.get(f.name) or {}
        answers[f.name] = answer_from_state(f, block.get(f.name))
    return answers


def errors_response(errors: Mapping[str, str]) -> dict[str, Any]:
    """The view_submission response showing ``errors`` (by field name) under their fields."""
    return {
        "response_action": "errors",
        "errors": {name: clip(message, L.SECTION_TEXT) for name, message in errors.items()},
    }


def render_options(options: Iterable[OptionSpec]) -> dict[str, Any]:
    """The block_suggestion response for an external select (at most 100 options)."""
    rendered = [option(Option.of(o)) for o in options]
    return {"options": rendered[: L.SELECT_OPTIONS]}


def suggest_options(
    form: Form, action_id: str, query: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """The block_suggestion response for field ``action_id`` of ``form`` typed ``query``."""
    f = form.field(action_id)
    if not isinstance(f, ChoiceField):
        return render_options([])
    return render_options(f.load_options(query, payload))
