"""The Slack app manifest ``flowbot slack manifest`` prints: paste it at api.slack.com/apps.

Bot scopes are derived from the Web API methods flowbot calls (``METHODS``), so the app asks for
exactly what it uses; a test checks the table against the calls in ``bot/``.
"""

from __future__ import annotations

from typing import Any

from bot.endpoint import EVENTS_PATH

#: Every Web API method flowbot calls, with the bot scopes it needs. views.* need none.
METHODS: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write", "chat:write.public"),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "conversations.open": ("im:write",),
    "conversations.members": ("channels:read", "groups:read"),
    "users.lookupByEmail": ("users:read", "users:read.email"),
    "users.info": ("users:read",),
    "usergroups.list": ("usergroups:read",),
    "usergroups.users.list": ("usergroups:read",),
    "views.open": (),
    "views.update": (),
    "views.push": (),
    "views.publish": (),
}

#: The slash command and what it does.
COMMAND = "/flowbot"
COMMAND_DESCRIPTION = "Start workflows, see their status and your pending tasks"
COMMAND_USAGE = (
    "start <workflow> [key=value ...] | status [run-id] | tasks | reassign <task-id> <@someone> | "
    "cancel <run-id> [reason] | retry <run-id> | help"
)
BOT_EVENTS = ["app_home_opened"]


def bot_scopes() -> list[str]:
    """The bot scopes: those of the methods called, plus ``commands`` for the slash command."""
    scopes = {s for needed in METHODS.values() for s in needed} | {"commands"}
    return sorted(scopes)


def manifest(*, url: str | None = None, name: str = "flowbot", socket_mode: bool | None = None) -> dict[str, Any]:
    """The app manifest. With ``url`` (flowbot's public base URL) Slack calls
    ``<url>/slack/events``; without it the app uses Socket Mode (set ``SLACK_APP_TOKEN``)."""
    socket = url is None if socket_mode is None else socket_mode
    request_url = None if url is None else url.rstrip("/") + EVENTS_PATH
    command: dict[str, Any] = {
        "command": COMMAND,
        "description": COMMAND_DESCRIPTION,
        "usage_hint": COMMAND_USAGE,
        # Slack then sends mentions, channels and links as ``<@U…|name>``, ``<#C…|name>``,
        # ``<mailto:…|…>``, which ``bot.commands`` turns back into ids and addresses.
        "should_escape": True,
    }
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    interactivity: dict[str, Any] = {"is_enabled": True}
    if request_url and not socket:
        command["url"] = request_url
        events["request_url"] = request_url
        interactivity["request_url"] = request_url
        interactivity["message_menu_options_url"] = request_url  # external selects' options
    return {
        "display_information": {
            "name": name,
            "description": "Workflows with people in the loop: forms, approvals and tasks in Slack.",
            "background_color": "#2c2d30",
        },
        "features": {
            "app_home": {
                "home_tab_enabled": True,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": True,
            },
            "bot_user": {"display_name": name, "always_online": True},
            "slash_commands": [command],
        },
        "oauth_config": {"scopes": {"bot": bot_scopes()}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket,
            "token_rotation_enabled": False,
        },
    }
