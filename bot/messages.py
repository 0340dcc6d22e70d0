"""Every user-facing Slack text of flowbot, as functions and constants.

Kept in one place so nothing is spelled inline twice.
"""

from __future__ import annotations

import datetime as dt

APPROVE = "Approve"
DECLINE = "Decline"
OPEN_FORM = "Open form"
OPEN_DETAILS = "Details"
REASSIGN = "Reassign"
REASSIGN_TITLE = "Reassign task"
REASSIGN_TO = "Hand it to"
REASSIGN_PICK = "Pick the person who should do it."
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
#: Logged once per process when flowbot starts without Slack settings.
SLACK_OFF = ("Slack is off: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (HTTP mode at /slack/events), "
             "or SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode), to turn it on")


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


def already_yours(at: dt.datetime | None) -> str:
    """Answer to a person whose own earlier answer completed the task (a click sent twice)."""
    when = f" {slack_date(at)}" if at else ""
    return f"Your answer was already recorded{when}: this task is done. Nothing else was changed."


def timed_out_before_you(at: dt.datetime | None) -> str:
    """Answer to a person whose answer came after the task's timeout closed it."""
    when = f" {slack_date(at)}" if at else ""
    return f"Too late: this task timed out{when} and flowbot closed it. Your answer was not recorded."


def already_decided() -> str:
    """Answer to a person deciding again on an approval that needs several people."""
    return "You already decided on this approval: a person's decision counts once. Nothing else was changed."


def self_approval() -> str:
    """Answer to the person who started a run, on an approval that refuses them."""
    return "You started this run, so you cannot decide on its approval: someone else must. Nothing was changed."


def timed_out(after: str, outcome: str, at: dt.datetime) -> str:
    """Outcome line of a card whose task nobody answered in time."""
    then = {"failed": "the run stopped"}.get(outcome, f"sent on as {outcome}")
    return f":alarm_clock: No answer within {after}: timed out {slack_date(at)} ({then})"


def answer_by(deadline: dt.datetime) -> str:
    """Context line of a card whose task has a timeout."""
    return f":alarm_clock: Answer by {slack_date(deadline)}"


def quorum_note(needed: int, decisions: list[dict[str, object]]) -> str:
    """Context line of an approval needing several people: how many, and who decided so far."""
    approvals = sum(1 for d in decisions if d.get("decision") == "approved")
    line = f"Needs {needed} approvals ({approvals} so far)"
    if decisions:
        line += ": " + ", ".join(f"{people([str(d.get('by'))])} {d.get('decision')}" for d in decisions)
    return line


def you_decided(decision: str, needed: int, decisions: list[dict[str, object]]) -> str:
    """Outcome line of the card of a person whose decision is kept while others still decide."""
    icon = ":white_check_mark:" if decision == "approved" else ":x:"
    return f"{icon} You {decision}. {quorum_note(needed, decisions)}"


def claimed_by_you() -> str:
    """Answer to a person who claims a team task they already took."""
    return "You already took this task."


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


def outcome_line(answers: dict[str, object], by: str, at: dt.datetime) -> str:
    """The line replacing a resolved card's buttons, from the submitted answers (an approval
    needing several people names everyone who decided it that way)."""
    decision = answers.get("decision")
    decisions = answers.get("decisions")
    if isinstance(decisions, list) and decision in ("approved", "declined"):
        names = people([str(d.get("by")) for d in decisions if isinstance(d, dict) and d.get("decision") == decision])
        icon, verb = (":white_check_mark:", "Approved") if decision == "approved" else (":x:", "Declined")
        comment = answers.get("comment")
        line = f"{icon} {verb} by {names} {slack_date(at)}"
        return f"{line}\n>{comment}" if decision == "declined" and isinstance(comment, str) and comment else line
    if decision == "approved":
        return approved_by(by, at)
    if decision == "declined":
        comment = answers.get("comment")
        return declined_by(by, at, comment if isinstance(comment, str) else None)
    return submitted_by(by, at)


# --- slash command, App Home, reminders (bot.commands, bot.home, bot.reminders) -------------

COMMAND = "/flowbot"
REMINDER_OPEN = "Open"
HOME_TITLE = "flowbot"
HOME_TASKS = "Waiting for you"
HOME_NO_TASKS = "Nothing waits for you. :tada:"
HOME_RUNS = "Your recent runs"
HOME_NO_RUNS = "No runs yet. Start one with `/flowbot start <workflow>`."
HOME_FOOTER = "`/flowbot help` lists what flowbot can do."
TASKS_TITLE = "Waiting for you"
NO_TASKS = "Nothing waits for you. :tada:"
NO_RUNS = "You have no runs yet. Start one with `/flowbot start <workflow>`."
WORKING = ":hourglass_flowing_sand: On it…"
#: The ack of ``/flowbot login``.
LOGIN_SENT = (":key: Check your DMs: flowbot is sending you a one-time sign-in link to the web console "
              "(it works once and expires in 15 minutes).")


def help_text(workflows: list[tuple[str, str]]) -> str:
    """``/flowbot help``: the subcommands and the workflows that can be started from Slack."""
    lines = [
        "*flowbot* runs your team's workflows in Slack.",
        "• `/flowbot start <workflow> [key=value ...]`: start a run (opens its form when it has one)",
        "• `/flowbot status [run-id]`: a run's report, or your recent runs",
        "• `/flowbot tasks`: what waits for you",
        "• `/flowbot reassign <task-id> <@someone|email>`: hand one of your tasks to someone else",
        "• `/flowbot cancel <run-id> [reason]`: cancel a run (operators of its workflow)",
        "• `/flowbot retry <run-id>`: run a failed run's failed step again (operators of its workflow)",
        "• `/flowbot login`: a one-time sign-in link to the web console, by DM",
        "• `/flowbot help`: this message",
    ]
    if workflows:
        lines.append("*Workflows:* " + ", ".join(f"`{n}` ({t})" for n, t in workflows))
    else:
        lines.append("There is no workflow you can start from Slack.")
    return "\n".join(lines)


def unknown_subcommand(word: str) -> str:
    """Answer to ``/flowbot <something unknown>``."""
    return f"`{word}` is not a flowbot command. Try `/flowbot help`. Nothing was started."


def usage(text: str) -> str:
    """Answer to a subcommand used the wrong way."""
    return f"Usage: `{text}`. Nothing was changed."


def unknown_workflow(name: str, known: list[str]) -> str:
    """Answer to ``/flowbot start`` naming no loaded workflow."""
    hint = (" Workflows: " + ", ".join(f"`{k}`" for k in known) + ".") if known else ""
    return f":warning: There is no workflow called `{name}`.{hint} Nothing was started."


def not_a_starter(title: str) -> str:
    """Answer to someone who may not start a workflow."""
    return f":no_entry: You are not allowed to start *{title}*. Nothing was started."


def not_startable(title: str, reason: str) -> str:
    """Answer when a workflow cannot be started from Slack."""
    return f":warning: *{title}* cannot be started from Slack: {reason}. Nothing was started."


def bad_argument(arg: str) -> str:
    """Answer to a ``start`` argument that is not ``key=value``."""
    return f":warning: `{arg}` is not `key=value`. Nothing was started."


def run_started(title: str, run_id: str) -> str:
    """Confirmation of a run started by the slash command."""
    return f":rocket: Started *{title}*: run `{run_id}`. `/flowbot status {run_id}` shows how it goes."


def start_failed(title: str, error: str) -> str:
    """Answer when starting a run failed (bad payload...)."""
    return f":warning: *{title}* was not started: {error}"


def unknown_run(ref: str) -> str:
    """Answer to ``/flowbot status`` with a run id that does not exist, or a run the person may
    not see (the same words: the answer does not tell which runs exist)."""
    return (f":warning: There is no run `{ref}` you can see. You can see the runs you took part in, "
            "and those of the workflows you operate or view.")


def run_line(title: str, run_id: str, status: str, at: dt.datetime) -> str:
    """One run in a list."""
    return f"{_STATUS_ICON.get(status, '•')} *{title}* `{run_id[:8]}` {status} · {slack_date(at)}"


def task_line(title: str, workflow_title: str, since: dt.datetime) -> str:
    """One pending task in a list."""
    return f"*{title}*\n{workflow_title} · waiting since {slack_date(since)}"


def more_items(n: int) -> str:
    """Context line under a cut list."""
    return f"…and {n} more"


def step_line(stage: str, status: str, by: str | None) -> str:
    """One step of a run's report."""
    who = f" by <@{by}>" if by and by[:1] in ("U", "W") else ""
    return f"{_STATUS_ICON.get(status, '•')} `{stage}` {status}{who}"


_STATUS_ICON = {
    "completed": ":white_check_mark:", "failed": ":x:", "cancelled": ":no_entry_sign:",
    "waiting": ":hourglass:", "running": ":arrows_counterclockwise:", "pending": ":hourglass:",
    "locked": ":arrows_counterclockwise:",
}


def reminder(title: str, since: dt.datetime) -> str:
    """The reminder about a task still waiting (a reply under its card)."""
    return f":bell: Reminder: *{title}* has been waiting for you since {slack_date(since)}."


def escalated(to: str, at: dt.datetime) -> str:
    """Outcome line of a card whose task went to the fallback assignee."""
    return f":arrow_up: No answer in time: handed to {to} {slack_date(at)}"


def reassigned_to(by: str, to: str, at: dt.datetime) -> str:
    """Outcome line of a card whose task was handed to someone else."""
    return f":arrow_right: Handed to {to} by <@{by}> {slack_date(at)}"


def command_failed(error: str) -> str:
    """Answer when a command broke on our side."""
    return f":warning: Something went wrong: {error}. Nothing may have been done; try again."


def cancelled_by(by: str, reason: str | None, at: dt.datetime) -> str:
    """Outcome line of a card whose run was cancelled."""
    return f":no_entry_sign: Cancelled by {people([by])} {slack_date(at)}" + (f": {reason}" if reason else "")


def run_cancelled(run_id: str, tasks: int) -> str:
    """Confirmation of ``/flowbot cancel``."""
    return f":no_entry_sign: Run `{run_id}` is cancelled ({tasks} open task(s) cancelled)."


def run_retried(run_id: str, tasks: list[int]) -> str:
    """Confirmation of ``/flowbot retry``."""
    return f":arrows_counterclockwise: Run `{run_id}` is running again (task(s) {', '.join(map(str, tasks))})."


def refused(reason: str) -> str:
    """Answer to an operation that was refused (not allowed, already done, unknown run)."""
    return f":no_entry: {reason}. Nothing was changed."


def reassign_done(task_id: int, to: str) -> str:
    """Confirmation of ``/flowbot reassign``."""
    return f":arrow_right: Task {task_id} is now {to}'s; they got it in a DM."


def people(refs: list[str]) -> str:
    """Assignees for a message: user ids as mentions, the rest as written."""
    return ", ".join(f"<@{r}>" if r[:1] in ("U", "W") and r.upper() == r else r for r in refs)


CLOSE = "Close"
NOTICE_TITLE = "flowbot"


def form_unavailable(error: str) -> str:
    """Answer when a form cannot be shown (its definition breaks Slack's limits or raised)."""
    return f":warning: This form cannot be shown: {error}"


def try_again() -> str:
    """Answer when flowbot cannot reach its database (a restart or failover): nothing was done."""
    return (":hourglass: flowbot cannot reach its database right now, so that was not recorded. "
            "Please try again in a moment.")


def notice_text_sent() -> str:
    """Confirmation of a decision taken on a card (ephemeral)."""
    return "Done: your answer was recorded."


def still_working() -> str:
    """Answer to a submission whose form code takes longer than Slack waits for."""
    return ("Thanks: your answer is being processed. If it cannot be recorded you will get a direct "
            "message saying why.")


def reassign_prompt(title: str) -> str:
    """The text of the Reassign modal (``title``: the task's escaped title)."""
    return f"Who should do *{title}* instead? They get the task's message, and yours is resolved."


def console_signin(link: str) -> str:
    """The DM carrying a one-time sign-in link to the web console."""
    return (f":key: Here is your sign-in link to the flowbot console: <{link}|sign in>. It works once and "
            "expires in 15 minutes. If you did not ask for it, ignore this message.")
