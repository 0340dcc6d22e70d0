"""The ``Approval`` shortcut: approve / decline buttons right in the assignee's DM.

Its answers are always ``{"decision": "approved" | "declined", "comment": str | None}``. As a
``Form`` it renders as a modal too (a decision radio and a comment), which is what the web
console and the DM's "Open" button show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.forms import limits, messages
from engine.forms.choices import Radio
from engine.forms.display import Facts, Markdown
from engine.forms.errors import FormError
from engine.forms.fields import LongText
from engine.forms.form import Form, Item
from engine.forms.validation import Rule

APPROVED = "approved"
DECLINED = "declined"
DECISIONS = (APPROVED, DECLINED)


def _comment_given(answers: dict[str, Any]) -> bool:
    if answers.get("decision") != DECLINED:
        return True
    comment = answers.get("comment")
    return isinstance(comment, str) and comment.strip() != ""


class Approval(Form):
    """Approve or decline, with ``facts`` (templates of the payload) and optional ``text``.

    With ``comment_on_decline`` (the default) declining asks for a required comment.
    """

    # The title heads the DM card (a header block); modals show it shortened.
    title_limit = limits.HEADER_TEXT

    def __init__(
        self,
        title: str,
        facts: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
        *,
        text: str | None = None,
        comment_on_decline: bool = True,
        approve_label: str = "Approve",
        decline_label: str = "Decline",
        comment_label: str = "Comment",
        name: str | None = None,
    ) -> None:
        self.facts = Facts(facts or {})
        self.text = text
        self.comment_on_decline = comment_on_decline
        self.approve_label = approve_label
        self.decline_label = decline_label
        self.comment_label = comment_label
        items: list[Item] = self._display_items()
        items += [
            Radio(
                "decision",
                "Decision",
                [(APPROVED, approve_label), (DECLINED, decline_label)],
            ),
            LongText("comment", comment_label, required=False),
        ]
        rules = [Rule(_comment_given, "comment", messages.COMMENT_ON_DECLINE)]
        super().__init__(
            title,
            items,
            rules=rules if comment_on_decline else [],
            submit_label="Send",
            name=name,
        )

    def _display_items(self) -> list[Item]:
        items: list[Item] = []
        if self.text:
            items.append(Markdown(self.text))
        if self.facts.facts:
            items.append(self.facts)
        return items

    def decline_form(self) -> Form:
        """The modal a decline opens when ``comment_on_decline``: the facts and a required
        comment. Its answers are ``{"comment": ...}``; pass them to ``answers()``."""
        title = self.title if len(self.title) <= limits.MODAL_TITLE else self.decline_label
        return Form(
            title,
            [*self._display_items(), LongText("comment", self.comment_label)],
            submit_label=self.decline_label,
            name=f"{self.name} (decline)",
        )

    def answers(self, decision: str, comment: str | None = None) -> dict[str, Any]:
        """The answers for a button click or a decline modal: ``{"decision", "comment"}``.

        Raises FormError for an unknown decision, or a decline without the required comment.
        """
        if decision not in DECISIONS:
            raise FormError(f"approval {self.name!r}: unknown decision {decision!r}")
        comment = comment.strip() if isinstance(comment, str) and comment.strip() else None
        if decision == DECLINED and self.comment_on_decline and comment is None:
            raise FormError(f"approval {self.name!r}: {messages.COMMENT_ON_DECLINE}")
        return {"decision": decision, "comment": comment}

    def check(self) -> list[str]:
        """As ``Form.check``, plus the approve and decline button labels."""
        problems = super().check()
        for what in ("approve_label", "decline_label"):
            label = getattr(self, what)
            if not label or len(label) > limits.BUTTON_TEXT:
                problems.append(
                    f"form {self.name!r}: {what} must be 1 to {limits.BUTTON_TEXT} characters"
                )
        return problems
