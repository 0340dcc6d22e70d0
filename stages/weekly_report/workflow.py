"""Weekly report: every Monday morning, a summary of last week's runs posted to a Slack channel.

A job with no transitions: it reads flowbot's own figures (``ctx.stats``) and posts one Block Kit
message through the durable outbox (``ctx.slack.post``). The channel comes from
``FLOWBOT_REPORT_CHANNEL`` (default ``#ops``).
"""

from engine import Workflow

workflow = Workflow(
    "weekly-report",
    title="Weekly report",
    description="Runs of the past week by workflow and status, and the slowest steps, posted to Slack.",
)

report = workflow.job("weekly-report", schedule="weekly on monday at 09:00", timezone="UTC")
