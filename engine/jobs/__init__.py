"""Scheduled jobs: fire times from ``engine.schedules``, fired once across every flowbot process.

Import the parts you need (``engine.jobs.scheduler``, ``engine.jobs.cli``). Importing this package
only plugs the schedule check into the workflow loader (``engine.jobs.checks``): a job with an
invalid schedule or timezone fails to load, with its file and line. Nothing here touches the store.
"""

from __future__ import annotations

from engine.jobs.checks import register_checks

register_checks()
