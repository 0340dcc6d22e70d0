"""Forms as modals: the view of a form session's current page, and load-time limit checks.

A modal carries only its form session id in ``private_metadata``; the answers of earlier pages
live in Postgres (``form_sessions``), so a long multi-page form never meets Slack's 3,000
characters. Every view is checked against Slack's limits before it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot import messages
from bot.blocks import plain_text, section
from bot.limits import check_view_limits
from bot.views import render_modal
from engine.errors import ConfigError
from engine.forms import Form, FormError, Page
from engine.forms import limits as L
from engine.loader import Registry
from engine.workflow import StageKind

#: callback_id of every flowbot form modal (the session says which form and what for).
CALLBACK_FORM = "flowbot_form"
#: callback_id of an information-only modal (no submit).
CALLBACK_NOTICE = "flowbot_notice"
#: callback_id of the Reassign modal (its private_metadata is the task id), and its one input.
CALLBACK_REASSIGN = "flowbot_reassign"
REASSIGN_INPUT = "to"


def form_view(form: Form, payload: Mapping[str, Any], *, session_id: str, page: str | Page | None = None,
              answers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The modal of ``page`` of ``form``; FormError when Slack would reject it (or when the
    definition itself is wrong: a ``form(task)`` built per task is checked here, not at load)."""
    problems = form.check()
    if problems:
        raise FormError(f"form {form.name!r}: " + "; ".join(problems), problems=problems)
    view = render_modal(form, payload, page=page, answers=answers, callback_id=CALLBACK_FORM,
                        private_metadata=session_id)
    problems = check_view_limits(view)
    if problems:
        raise FormError(f"form {form.name!r} cannot be shown in Slack: " + "; ".join(problems), problems=problems)
    return view


def notice_view(title: str, text: str) -> dict[str, Any]:
    """A modal that only says something (the answer to a late or refused submission)."""
    return {
        "type": "modal",
        "callback_id": CALLBACK_NOTICE,
        "title": plain_text(title, L.MODAL_TITLE),
        "close": plain_text(messages.CLOSE, L.MODAL_BUTTON),
        "blocks": [section(text)],
    }


def reassign_view(task_id: int, title: str) -> dict[str, Any]:
    """The modal of a card's Reassign button: a person picker (``title``: the task's escaped
    title)."""
    view = {
        "type": "modal",
        "callback_id": CALLBACK_REASSIGN,
        "private_metadata": str(task_id),
        "title": plain_text(messages.REASSIGN_TITLE, L.MODAL_TITLE),
        "submit": plain_text(messages.REASSIGN, L.MODAL_BUTTON),
        "close": plain_text(messages.CLOSE, L.MODAL_BUTTON),
        "blocks": [
            section(messages.reassign_prompt(title)),
            {"type": "input", "block_id": REASSIGN_INPUT, "label": plain_text(messages.REASSIGN_TO, L.LABEL),
             "element": {"type": "users_select", "action_id": REASSIGN_INPUT}},
        ],
    }
    problems = check_view_limits(view)
    if problems:  # a title is clipped to the limits; this is a programming error
        raise FormError("the Reassign modal breaks Slack's limits: " + "; ".join(problems), problems=problems)
    return view


def check_form(form: Form) -> list[str]:
    """Problems of a form definition, and of every page rendered as a modal (empty payload)."""
    problems = list(form.check())
    if problems:
        return problems
    for page in form.pages:
        try:
            form_view(form, {}, session_id="0" * 36, page=page)
        except FormError as exc:
            problems += list(getattr(exc, "problems", None) or [str(exc)])
        except Exception as exc:
            problems.append(f"form {form.name!r}, page {page.name!r}: cannot render: {type(exc).__name__}: {exc}")
    return problems


def check_forms(registry: Registry) -> list[str]:
    """Problems of every form stage whose form is a module-level ``Form`` (a ``form(task)``
    function is checked when it renders, with the task's payload)."""
    problems: list[str] = []
    for wf in registry.workflows.values():
        for stage in wf.stages.values():
            form = getattr(stage.module, "form", None) if stage.kind is StageKind.FORM else None
            if isinstance(form, Form):
                where = f"{stage.where.file}:{stage.where.line}: " if stage.where else ""
                problems += [f"{where}{wf.name}.{stage.name}: {p}" for p in check_form(form)]
    return problems


def check_forms_or_raise(registry: Registry) -> None:
    """Refuse to start the Slack app with a form Slack would reject (all problems listed)."""
    problems = check_forms(registry)
    if problems:
        raise ConfigError("forms that Slack would reject:\n  " + "\n  ".join(problems))
