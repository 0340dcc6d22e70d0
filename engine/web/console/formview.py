"""The engine's ``Form`` as an HTML form: what each item renders as, and answers read back.

The same ``Form`` renders as a Slack modal in the Slack app; here each field kind maps to an
input element, display blocks are filled from the payload (HTML-escaped: payloads are data),
and a multi-page form walks ``Page(when=...)`` exactly as the modal does, carrying the answers
of earlier pages in a hidden field (they are validated again, whole, when the form is submitted).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from multidict import MultiDictProxy

from engine.forms import (
    Approval,
    ChoiceField,
    Display,
    Facts,
    Field,
    Form,
    Links,
    Markdown,
    Page,
    UserPicker,
    is_empty,
    parse_number,
)

#: Hidden fields of a multi-page form.
PAGE_FIELD = "_page"
ANSWERS_FIELD = "_answers"
#: The button of an Approval: its value is the decision.
DECISION_FIELD = "decision"

_INPUT_TYPES = {"text": "text", "email": "email", "url": "url", "number": "number", "date": "date",
                "datetime": "datetime-local", "user": "text"}


def markdown(text: str, payload: dict[str, Any]) -> Markup:
    """A Markdown display block as HTML: placeholders filled with escaped payload values, then a
    small safe subset (``*bold*``, ``_italic_``, `` `code` ``, line breaks) of what Slack shows."""
    # The author's text is escaped first (braces survive, so placeholders still fill), then each
    # value as it is filled: only the markup below is ever produced.
    out = Markdown(html.escape(text)).render(payload, escape=html.escape)
    out = re.sub(r"\*\*(.+?)\*\*|\*(.+?)\*", lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", out)
    out = re.sub(r"(?<![\w])_(.+?)_(?![\w])", r"<em>\1</em>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return Markup(out.replace("\n", "<br>"))


@dataclass
class Item:
    """One thing a page shows: a field (with its value and error) or a display block."""

    kind: str
    name: str = ""
    label: str = ""
    required: bool = False
    hint: str | None = None
    placeholder: str | None = None
    input_type: str = "text"
    value: Any = None
    error: str | None = None
    options: list[tuple[str, str]] = field(default_factory=list)
    multi: bool = False
    typeahead: bool = False
    html: Markup | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def _field_item(f: Field, value: Any, error: str | None) -> Item:
    item = Item(kind=f.kind, name=f.name, label=f.label, required=f.required, hint=f.hint,
                placeholder=f.placeholder, input_type=_INPUT_TYPES.get(f.kind, "text"), error=error)
    if isinstance(f, ChoiceField):
        item.options = [(o.value, o.label) for o in f.choices]
        item.multi = f.is_multi
        item.typeahead = f.options_from is not None
    if isinstance(f, UserPicker):
        item.multi = f.multi
        item.hint = item.hint or ("Emails or Slack user ids, separated by commas" if f.multi
                                  else "An email or a Slack user id")
    if f.kind == "number":
        min_ = getattr(f, "min", None)
        max_ = getattr(f, "max", None)
        item.attrs = {"step": "any" if getattr(f, "decimal", False) else "1",
                      **({"min": min_} if min_ is not None else {}), **({"max": max_} if max_ is not None else {})}
    if f.kind in ("text", "long_text"):
        if getattr(f, "max_length", None):
            item.attrs["maxlength"] = f.max_length  # type: ignore[attr-defined]
    item.value = _display_value(f, value)
    return item


def _display_value(f: Field, value: Any) -> Any:
    if value is None:
        return [] if f.is_multi else ""
    if f.kind == "datetime" and isinstance(value, str):
        return value[:16]  # an ISO moment as datetime-local shows it (the offset is UTC's)
    if isinstance(f, UserPicker) and f.multi and isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def page_items(form: Form, page: Page, payload: dict[str, Any], values: dict[str, Any],
               errors: dict[str, str]) -> list[Item]:
    """What ``page`` shows, each field with its value (an answer, else its initial value)."""
    initial = form.initial_values(payload, page=page)
    items: list[Item] = []
    for entry in page.fields:
        if isinstance(entry, Field):
            value = values.get(entry.name, initial.get(entry.name))
            items.append(_field_item(entry, value, errors.get(entry.name)))
        elif isinstance(entry, Markdown):
            items.append(Item(kind="markdown", html=markdown(entry.text, payload)))
        elif isinstance(entry, Facts):
            items.append(Item(kind="facts", pairs=entry.render(payload)))
        elif isinstance(entry, Links):
            safe = [(label, url) for label, url in entry.render(payload)
                    if url.lower().startswith(("http://", "https://", "mailto:"))]
            items.append(Item(kind="links", pairs=safe))
        elif isinstance(entry, Display):
            continue
    return items


def approval_items(form: Approval, payload: dict[str, Any], values: dict[str, Any],
                   errors: dict[str, str]) -> list[Item]:
    """An approval's display blocks and its comment (the decision is the button pressed)."""
    items = [i for i in page_items(form, form.pages[0], payload, values, errors) if i.name != DECISION_FIELD]
    for item in items:
        if item.name == "comment":
            item.hint = "Required when you decline." if form.comment_on_decline else None
    return items


def read_page(page: Page, posted: MultiDictProxy[Any]) -> dict[str, Any]:
    """The answers of ``page``'s fields from a posted HTML form, typed as the engine expects."""
    answers: dict[str, Any] = {}
    for f in page.inputs:
        if f.is_multi and not isinstance(f, UserPicker):
            answers[f.name] = [str(v) for v in posted.getall(f.name, []) if str(v) != ""]
            continue
        raw = str(posted.get(f.name, "")).strip() if f.kind != "long_text" else str(posted.get(f.name, ""))
        if is_empty(raw):
            answers[f.name] = f.empty_value()
        elif f.kind == "number":
            number = parse_number(raw)
            answers[f.name] = raw if number is None else number
        elif f.kind == "datetime":
            answers[f.name] = raw + ":00+00:00" if len(raw) == 16 else raw
        elif isinstance(f, UserPicker) and f.multi:
            answers[f.name] = [part.strip() for part in raw.split(",") if part.strip()]
        else:
            answers[f.name] = raw
    return answers


def carried(posted: MultiDictProxy[Any]) -> dict[str, Any]:
    """The answers of earlier pages a multi-page form carries."""
    try:
        value = json.loads(str(posted.get(ANSWERS_FIELD) or "{}"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# -- timeouts and approvals needing several people ----------------------------------------------


@dataclass
class Policy:
    """What a task page says besides its form: when it times out, and for an approval that needs
    several people, how many and who has decided so far."""

    deadline: dt.datetime | None = None
    needed: int = 0
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def approvals(self) -> int:
        """Approvals so far."""
        return sum(1 for d in self.decisions if d.get("decision") == "approved")

    def as_json(self) -> dict[str, Any]:
        """The page's JSON twin of it."""
        return {"deadline": self.deadline.isoformat() if self.deadline else None, "needed": self.needed or None,
                "decisions": self.decisions}


async def policy_of(db: Any, task: Mapping[str, Any], form: Form) -> Policy:
    """The deadline and the decisions so far of a pending form task (two indexed reads)."""
    from engine.store import deadlines

    policy = Policy(deadline=(await deadlines.deadlines_of(db, [task["id"]])).get(task["id"]))
    if isinstance(form, Approval) and form.quorum:
        policy.needed = form.approvers
        policy.decisions = (await deadlines.decisions_of(db, [task["id"]])).get(task["id"], [])
    return policy


def recorded_text(result: Any) -> str:
    """What a person whose decision was kept (the approval needs more) is told."""
    progress = result.progress or {}
    return (f"Your decision is recorded: {progress.get('approvals', 0)} of {progress.get('needed', '?')} "
            "approvals so far. The task stays open until enough people have decided.")


def refusal(result: Any) -> tuple[str, str, int] | None:
    """(title, text, status) of a refusal a timeout or an approval's rules explain, else None."""
    from engine.people import actions as people

    if result.status == people.ALREADY and result.message == people.TIMED_OUT:
        when = f" at {result.at:%Y-%m-%d %H:%M} UTC" if result.at else ""
        return ("Too late", f"This task timed out{when} and flowbot closed it: your answer was not recorded.", 409)
    if result.status == people.ALREADY and result.message == people.DECIDED:
        return ("Already decided", "You already decided on this approval: a person's decision counts once.", 409)
    if result.status == people.FORBIDDEN and result.message == people.SELF_APPROVAL:
        return ("Not yours to decide", "You started this run, so you cannot decide on its approval: someone else "
                "must.", 403)
    return None
