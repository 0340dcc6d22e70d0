"""``flowbot login --as EMAIL``: print a one-time sign-in link to the web console."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.options import settings_from
from engine.people import links
from engine.runtime.lifecycle import open_app


def add_commands(sub: Any) -> None:
    """Add ``flowbot login``."""
    p = sub.add_parser("login", help="print a one-time sign-in link to the web console")
    p.add_argument("--as", dest="person", required=True, metavar="EMAIL", help="who the link signs in")
    p.add_argument("--role", choices=["member", "admin"], default="member",
                   help="what the session may do at most (default: member)")
    p.set_defaults(func=cmd_login)


async def cmd_login(args: argparse.Namespace) -> int:
    person = args.person.strip()
    if not person or any(c.isspace() for c in person):
        print(f"flowbot: --as needs an email, got {args.person!r}", file=sys.stderr)
        return 2
    async with open_app(settings_from(args), load_plugins_=False) as app:
        link = await links.signin_url(app.db, app.settings.base_url(), person, app.store.clock(), role=args.role)
    print(f"Sign in to the flowbot console as {person} (the link works once, within "
          f"{int(links.SIGNIN_TTL.total_seconds() // 60)} minutes):\n{link}")
    return 0
