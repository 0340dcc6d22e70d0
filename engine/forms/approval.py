"""The ``Approval`` shortcut: approve / decline buttons right in the assignee's DM.

Its answers are always ``{"decision": "approved" | "declined", "comment": str | None}``. As a
``Form`` it renders as a modal too (a decision radio and a comment), which is what the web
console and the DM's "Open" button show.

``approvers=N`` (with a list or team assignee) asks N distinct people to approve: each decision
is kept, and ``run`` is called once, when the outcome is known, with ``answers["decisions"]``
(``[{"by", "decision", "comment", "at"}]``, in order). The task is approved when N approved; it
is declined at the first decline (``decline="any"``, the default) or, with ``decline="all"``,
only once so many have declined that N approvals are no longer possible (``engine.people.quorum``).
``allow_self_approval=False`` refuses any decision by the person who started the run.
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
#: ``Approval(decline=...)``: the first decline declines, or only once N approvals are impossible.
DECLINE_RULES = ("any", "all")


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
        approvers: int = 1,
        decline: str = "any",
        allow_self_approval: bool = True,
    ) -> None:
        self.facts = Facts(facts or {})
        #: How many distinct people must approve; how declines count ("any" or "all").
        self.approvers = approvers
        self.decline = decline
        self.allow_self_approval = allow_self_approval
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

    @property
    def quorum(self) -> bool:
        """Whether it needs more than one person's approval (decisions are kept one by one)."""
        return isinstance(self.approvers, int) and self.approvers > 1

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
        if isinstance(self.approvers, bool) or not isinstance(self.approvers, int) or self.approvers < 1:
            problems.append(f"form {self.name!r}: approvers must be a whole number of people, at least 1, "
                            f"got {self.approvers!r}")
        if self.decline not in DECLINE_RULES:
            problems.append(f"form {self.name!r}: decline must be \"any\" (the first decline declines) or "
                            f"\"all\" (declined once N approvals are impossible), got {self.decline!r}")
        for what in ("approve_label", "decline_label"):
            label = getattr(self, what)
            if not label or len(label) > limits.BUTTON_TEXT:
                problems.append(
                    f"form {self.name!r}: {what} must be 1 to {limits.BUTTON_TEXT} characters"
                )
        return problems
