"""``flowbot hooks``: every hook with its URL, methods and authentication (no database needed)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from engine.workflow import Stage, StageKind


def describe(stage: Stage, base_url: str) -> dict[str, Any]:
    """One hook as `flowbot hooks --json` prints it."""
    auth = stage.auth
    missing = auth.missing_secret() if auth is not None else None
    return {
        "workflow": stage.workflow.name,
        "stage": stage.name,
        "url": f"{base_url.rstrip('/')}/hooks/{stage.path}",
        "methods": list(stage.methods),
        "auth": auth.describe() if auth is not None else None,
        "secret_env": auth.secret_env if auth is not None else None,
        "secret_set": None if auth is None else missing is None,
        "accept": list(_accept(stage)),
        "max_bytes": stage.options.get("max_bytes"),
        "file": f"{stage.where.file}:{stage.where.line}",
    }


def _accept(stage: Stage) -> tuple[str, ...]:
    from engine.triggers.hooks.parse import DEFAULT_ACCEPT

    accept = stage.options.get("accept") or DEFAULT_ACCEPT
    return (accept,) if isinstance(accept, str) else tuple(accept)


def cmd_hooks(args: argparse.Namespace) -> int:
    """List the hooks of the loaded workflows."""
    from engine.cli.main import load_or_report, settings_from

    settings = settings_from(args)
    registry = load_or_report(settings)
    if registry is None:
        return 1
    base_url = args.base_url or f"http://{_host(settings.host)}:{settings.port}"
    hooks = [describe(s, base_url) for s in registry.stages(StageKind.HOOK)]
    if args.json:
        print(json.dumps(hooks, indent=2))
        return 0
    if not hooks:
        print(f"no hooks in the workflows under {settings.stages_dir.resolve()}")
        return 0
    if not args.base_url:
        port_from = "--port" if getattr(args, "port", None) else ("PORT" if "PORT" in os.environ else "the default")
        print(f"URLs use port {settings.port} ({port_from} of this command; if the server was started with "
              "another, pass --port or --base-url)")
    print("Secrets are checked here, in this command's environment: the server reads its own.")
    for h in hooks:
        print(f"{' '.join(h['methods'])} {h['url']}  ({h['workflow']}/{h['stage']})")
        if h["auth"] is None:
            print("    auth: NONE (auth=None: anyone who can reach the URL may call it)")
        else:
            state = ("set here" if h["secret_set"]
                     else "NOT SET here: if the server lacks it too, requests get 503 until it is set")
            print(f"    auth: {h['auth']}; ${h['secret_env']} {state}")
    return 0


def _host(bind: str) -> str:
    """The host to print in a URL for a bind address (every interface: this machine)."""
    return "localhost" if bind in ("0.0.0.0", "::", "127.0.0.1") else bind


def add_commands(subparsers: Any) -> None:
    """Add `flowbot hooks` (called by engine.cli.main for each module of COMMAND_MODULES)."""
    p = subparsers.add_parser("hooks", help="list hooks with their URLs and authentication")
    p.add_argument("--base-url", help="the public base URL to print (default http://localhost:$PORT)")
    p.add_argument("--port", type=int, help="the port the server listens on (default: $PORT or 8080)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hooks)
