"""Extension points: packages that plug into flowbot without the engine importing them.

A plugin is an object registered under the ``flowbot.plugins`` entry-point group (the Slack app
in ``bot/`` is one). This keeps the dependency arrow one way: ``bot`` imports ``engine``, never the
reverse.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.runtime.app import App

log = logging.getLogger(__name__)

GROUP = "flowbot.plugins"


class Plugin(Protocol):
    """What a plugin offers; every method may be a no-op."""

    name: str

    def add_commands(self, subparsers: Any, settings_factory: Callable[[argparse.Namespace], Any]) -> None:
        """Add CLI subcommands (e.g. ``flowbot slack manifest``)."""

    async def setup(self, app: App) -> None:
        """Register routes, outbox handlers and background parts on an opened app."""

    async def close(self) -> None:
        """Release what ``setup`` opened."""


_EXTRA: list[Plugin] = []


def register(plugin: Plugin) -> None:
    """Add a plugin in-process (tests; programs embedding flowbot)."""
    _EXTRA.append(plugin)


def load_plugins() -> list[Plugin]:
    """Every installed plugin, plus those registered in-process."""
    plugins: list[Plugin] = []
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception:
            log.exception("plugin %s failed to load", ep.name, extra={"action": "plugin_error"})
            continue
        plugins.append(obj() if isinstance(obj, type) else obj)
    return plugins + list(_EXTRA)
