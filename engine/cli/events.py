"""``flowbot events send NAME --key K [--payload JSON]``: an event for waiting runs (added through
COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_commands(sub: Any) -> None:
    """Add the event commands to the ``flowbot`` parser."""
    p = sub.add_parser("events", help="`events send NAME --key K [--payload JSON]`: an event for waiting runs")
    p.add_argument("action", choices=["send"])
    p.add_argument("name", help="the event's name, e.g. payment.received")
    p.add_argument("--key", required=True, help="the key waits match on, e.g. an order id")
    p.add_argument("--payload", help="the event's payload, a JSON object")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_events)


async def cmd_events(args: argparse.Namespace) -> int:
    """Publish one event: every wait on its name and key completes (and later ones within the
    lookback)."""
    from engine.cli.main import settings_from
    from engine.context import check_event
    from engine.errors import FlowbotError
    from engine.runtime.lifecycle import open_app
    from engine.store import waits

    try:
        payload = json.loads(args.payload) if args.payload else {}
    except json.JSONDecodeError as exc:
        raise FlowbotError(f"--payload is not valid JSON: {exc}") from None
    settings = settings_from(args)
    name, key, payload = check_event({"name": args.name, "key": args.key, "payload": payload},
                                  limit=settings.max_payload_bytes)
    async with open_app(settings, load_plugins_=False, pool_size=2) as app:
        published = await waits.send_event(app.store, name, key, payload, source="cli")
    if args.json:
        print(json.dumps({"event_id": published.id, "name": name, "key": key, "matched": published.matched}))
    else:
        print(f"event {name} (key {key}) #{published.id}: {published.matched} wait(s) completed")
    return 0
