"""Every user-facing Slack text of flowbot, as functions and constants.

Kept in one place so nothing is spelled inline twice.
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


CLAIM = "Claim"
SLACK_DISABLED = "Slack disabled: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"


def team_fallback(title: str) -> str:
    """Notification text of a team card (anyone of the team may claim it)."""
    return f"A task for your team: {title}"


def team_note(team: str) -> str:
    """Context line of a team card."""
    return f"For {team}: the first to claim it takes it"


def not_assignee(who: list[str] | None = None) -> str:
    """Ephemeral answer to someone who is not an assignee of the task they clicked."""
    if who:
        return "This task is assigned to " + ", ".join(who) + ": only they can act on it. Nothing was changed."
    return "This task is not assigned to you, so you cannot act on it. Nothing was changed."


def not_member(team: str) -> str:
    """Ephemeral answer to someone outside the team of a team task."""
    return f"Only members of {team} can claim this task. Nothing was changed."


def already_done(by: str | None, at: dt.datetime | None) -> str:
    """Answer to the loser of a race: the task was completed by someone else first."""
    who = f"<@{by}>" if by and not by.startswith(("engine", "worker")) else (by or "someone else")
    when = f" {slack_date(at)}" if at else ""
    return f"Too late: this task was already completed by {who}{when}. Your answer was not recorded."


def already_claimed(by: str | None) -> str:
    """Answer when a team task was claimed by someone else first."""
    return f"<@{by}> already took this task." if by else "Someone else already took this task."


def claimed_you(title: str) -> str:
    """Ephemeral confirmation of a claim."""
    return f"You took *{title}*: it is yours now."


def gone(reason: str | None) -> str:
    """Answer when the task can no longer be acted on (cancelled, failed, removed)."""
    return f"This task can no longer be acted on ({reason or 'it changed'}). Nothing was changed."


def stage_failed(error: str | None) -> str:
    """Answer when the form's own code failed while handling a submission."""
    return f":warning: Your answer could not be processed: {error or 'unknown error'}. The task is still open."


def session_expired() -> str:
    """Answer when a modal's form session has expired or is unknown."""
    return "This form has expired. Open it again from its message."


def reassigned(by: str, at: dt.datetime) -> str:
    """Outcome line of a card whose task was given to someone else."""
    return f":arrow_right: Reassigned by <@{by}> {slack_date(at)}"


def outcome_line(answers: dict[str, object], by: str, at: dt.datetime) -> str:
    """The line replacing a resolved card's buttons, from the submitted answers."""
    decision = answers.get("decision")
    if decision == "approved":
        return approved_by(by, at)
    if decision == "declined":
        comment = answers.get("comment")
        return declined_by(by, at, comment if isinstance(comment, str) else None)
    return submitted_by(by, at)
