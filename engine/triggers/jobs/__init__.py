"""Scheduled jobs: fire times from ``engine.triggers.schedules``, fired once across every flowbot process.

Import the parts you need (``engine.triggers.jobs.scheduler``, ``engine.cli.jobs``). Importing this package
only plugs the schedule check into the workflow loader (``engine.triggers.jobs.checks``): a job with an
invalid schedule or timezone fails to load, with its file and line. Nothing here touches the store.
"""

from __future__ import annotations

from engine.triggers.jobs.checks import register_checks

register_checks()
