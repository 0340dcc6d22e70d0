"""DM cards: the message asking someone to approve or fill a form, and its resolved state.

Fact values are escaped (data never turns into mentions or links) unless they are ``Mrkdwn``:
a form's ``Facts`` rendered by ``form_facts`` keep the author's markup, with the data escaped.
Buttons carry the task reference as their value; the action ids are fixed so the
interactivity handler routes them: ``flowbot_approve``, ``flowbot_decline``, ``flowbot_open``,
``flowbot_reassign``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot import messages as texts
from bot.blocks import button, context, escape, facts_blocks, header, section, to_mrkdwn
from engine.forms import Facts as FormFacts
from engine.forms.templates import fill_template, format_value

ACTION_APPROVE = "flowbot_approve"
ACTION_DECLINE = "flowbot_decline"
ACTION_OPEN = "flowbot_open"
ACTION_REASSIGN = "flowbot_reassign"
#: block_id of the buttons row of a card.
ACTIONS_BLOCK = "flowbot_task"
#: Facts shown on a card at most: a DM is a summary, the form shows the rest.
MAX_CARD_FACTS = 20

Facts = Mapping[str, Any] | Sequence[tuple[str, Any]]


class Mrkdwn(str):
    """A fact value that already is safe mrkdwn (the author's template, with the payload's
    values escaped in it): cards show it as is, where any other value is escaped."""


def form_facts(facts: FormFacts, payload: Mapping[str, Any]) -> list[tuple[str, Mrkdwn]]:
    """A form's ``Facts`` for a card: the payload's values escaped, the author's template
    (``"<@{requester}>"``, ``"*{amount}*"``) kept, so mentions and markup work."""
    return [(label, Mrkdwn(text)) for label, text in facts.render(payload, escape=escape)]


def form_text(text: str | None, payload: Mapping[str, Any]) -> str | None:
    """A form's ``text`` for a card, as its modal shows it: Markdown converted to mrkdwn and
    ``{placeholders}`` filled with the payload's values escaped."""
    if not text:
        return None
    return fill_template(to_mrkdwn(text), payload, escape=escape)


def _fact_pairs(facts: Facts | None) -> list[tuple[str, Any]]:
    if not facts:
        return []
    return list(facts.items()) if isinstance(facts, Mapping) else list(facts)


def _body(text: str | None, facts: Facts | None, note: str | None) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if text:
        blocks.append(section(text))
    pairs = _fact_pairs(facts)
    shown = [(label, value if isinstance(value, Mrkdwn) else escape(format_value(value)))
             for label, value in pairs[:MAX_CARD_FACTS]]
    blocks += facts_blocks(shown)
    if len(pairs) > MAX_CARD_FACTS:
        blocks.append(context(texts.MORE_FACTS.format(n=len(pairs) - MAX_CARD_FACTS)))
    if note:
        blocks.append(context(note))
    return blocks


def approval_message_blocks(
    title: str,
    facts: Facts | None,
    *,
    task_ref: str,
    text: str | None = None,
    note: str | None = None,
    approve_label: str = texts.APPROVE,
    decline_label: str = texts.DECLINE,
    open_label: str | None = None,
    reassign_label: str | None = texts.REASSIGN,
) -> list[dict[str, Any]]:
    """An approval DM: title, optional mrkdwn ``text``, the facts, an optional context
    ``note`` (e.g. ``texts.from_workflow(...)``) and Approve / Decline (/ Open) / Reassign
    buttons."""
    buttons = [
        button(approve_label, ACTION_APPROVE, task_ref, style="primary"),
        button(decline_label, ACTION_DECLINE, task_ref, style="danger"),
    ]
    if open_label:
        buttons.append(button(open_label, ACTION_OPEN, task_ref))
    if reassign_label:
        buttons.append(button(reassign_label, ACTION_REASSIGN, task_ref))
    return [
        header(title),
        *_body(text, facts, note),
        {"type": "actions", "block_id": ACTIONS_BLOCK, "elements": buttons},
    ]


def assignment_message_blocks(
    title: str,
    *,
    task_ref: str,
    text: str | None = None,
    facts: Facts | None = None,
    note: str | None = None,
    open_label: str = texts.OPEN_FORM,
    reassign_label: str | None = texts.REASSIGN,
) -> list[dict[str, Any]]:
    """A DM telling someone a form waits for them: what is asked (``text``), key facts, an
    Open button that opens the modal and a Reassign button."""
    buttons = [button(open_label, ACTION_OPEN, task_ref, style="primary")]
    if reassign_label:
        buttons.append(button(reassign_label, ACTION_REASSIGN, task_ref))
    return [
        header(title),
        *_body(text, facts, note),
        {"type": "actions", "block_id": ACTIONS_BLOCK, "elements": buttons},
    ]


def resolved_message_blocks(
    title: str,
    outcome_text: str,
    *,
    text: str | None = None,
    facts: Facts | None = None,
) -> list[dict[str, Any]]:
    """The card updated in place once resolved: no buttons, the outcome (mrkdwn, e.g.
    ``texts.approved_by(user, at)``) in their place."""
    return [header(title), *_body(text, facts, None), section(outcome_text)]


def payload_facts(
    payload: Mapping[str, Any], keys: Sequence[str] | None = None, *, limit: int = 8
) -> list[tuple[str, str]]:
    """Key facts of a payload for a card: the given ``keys``, or the first ``limit`` scalar
    values, labelled from their keys ("manager_email" → "Manager email")."""
    chosen = (
        list(keys)
        if keys is not None
        else [k for k, v in payload.items() if v is not None and not isinstance(v, dict | list)][
            :limit
        ]
    )
    return [
        (k.replace("_", " ").strip().capitalize() or k, format_value(payload.get(k)))
        for k in chosen
    ]
