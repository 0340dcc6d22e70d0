"""flowbot's Slack app: Bolt handlers, Block Kit rendering, DMs, App Home and slash commands."""
