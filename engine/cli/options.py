"""Settings for a command: the environment, overridden by its command-line flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.settings import Settings


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings, overridden by command-line flags."""
    s = Settings.from_env()
    if getattr(args, "stages", None):
        s = s.with_(stages_dir=Path(args.stages))
    if getattr(args, "port", None) is not None:
        s = s.with_(port=args.port)
    if getattr(args, "host", None):
        s = s.with_(host=args.host)
    if getattr(args, "concurrency", None):
        s = s.with_(concurrency=args.concurrency)
    return s
