"""Summarise the week that ended at this fire time and post it to the ops channel."""

import datetime as dt
import os

from engine.triggers.jobs.context import JobContext

from .message import build_message

DEFAULT_CHANNEL = "#ops"


async def run(ctx: JobContext) -> None:
    until: dt.datetime = ctx.fire_time
    since = until - dt.timedelta(days=7)
    counts = await ctx.stats.runs_by_workflow_status(since, until)
    slowest = await ctx.stats.slowest_steps(since, until, limit=5)
    text, blocks = build_message(counts, slowest, since, until)
    channel = os.environ.get("FLOWBOT_REPORT_CHANNEL") or DEFAULT_CHANNEL
    ctx.slack.post(channel, text=text, blocks=blocks)
    # The message goes through the outbox: sent once this fire commits, and only when Slack is on.
    if os.environ.get("SLACK_BOT_TOKEN"):
        where = f"sent to {channel}"
    else:
        where = f"queued for {channel} until Slack is on (SLACK_BOT_TOKEN is not set)"
    ctx.log("weekly report for %s to %s %s: %d run(s)", since.date(), until.date(), where,
            sum(c["n"] for c in counts))
