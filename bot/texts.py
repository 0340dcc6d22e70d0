"""User-facing Slack texts of the DM cards and modals, as functions and constants.

Kept in one place so nothing is spelled inline twice (to be merged into bot/messages.py).
"""

from __future__ import annotations

import datetime as dt

APPROVE = "Approve"
DECLINE = "Decline"
OPEN_FORM = "Open form"
OPEN_DETAILS = "Details"
MORE_FACTS = "…and {n} more"
ERROR_PREFIX = ":warning: "
NO_OPTIONS = "No matches"


def slack_date(moment: dt.datetime) -> str:
    """A date Slack shows in each reader's own time zone (``<!date^...>``), with a fallback."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    fallback = aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(aware.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def approval_fallback(title: str) -> str:
    """Notification text of an approval DM (shown where blocks are not)."""
    return f"Approval needed: {title}"


def assignment_fallback(title: str) -> str:
    """Notification text of an assignment DM."""
    return f"A form needs you: {title}"


def approved_by(user_id: str, at: dt.datetime) -> str:
    """Outcome line of an approved card."""
    return f":white_check_mark: Approved by <@{user_id}> {slack_date(at)}"


def declined_by(user_id: str, at: dt.datetime, comment: str | None = None) -> str:
    """Outcome line of a declined card, with the comment quoted."""
    text = f":x: Declined by <@{user_id}> {slack_date(at)}"
    return f"{text}\n>{comment}" if comment else text


def submitted_by(user_id: str, at: dt.datetime) -> str:
    """Outcome line of a submitted form card."""
    return f":white_check_mark: Submitted by <@{user_id}> {slack_date(at)}"


def claimed_by(user_id: str, at: dt.datetime) -> str:
    """Outcome line when another member of a team took the task."""
    return f":raised_hand: Taken by <@{user_id}> {slack_date(at)}"


def cancelled(at: dt.datetime) -> str:
    """Outcome line when the run was cancelled before anyone acted."""
    return f":no_entry_sign: Cancelled {slack_date(at)}"


def from_workflow(workflow_title: str) -> str:
    """Context line naming the workflow a task comes from."""
    return f"From the *{workflow_title}* workflow"
