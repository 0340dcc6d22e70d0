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
    ctx.log("weekly report for %s to %s posted to %s: %d run(s)", since.date(), until.date(), channel,
            sum(c["n"] for c in counts))
