"""Load-time validation of job stages: the schedule and timezone must parse."""

from __future__ import annotations

from engine.triggers.schedules import ScheduleError, parse_schedule
from engine.workflow import Stage, StageKind


def check_schedule(stage: Stage) -> list[str]:
    """Errors of a job stage's schedule (none for other kinds of stage)."""
    if stage.kind is not StageKind.JOB:
        return []
    if not isinstance(stage.schedule, str) or not stage.schedule.strip():
        return [f'job "{stage.name}" needs schedule= (a cron string, or hourly/daily/weekly/monthly)']
    if not isinstance(stage.timezone, str):
        return [f'job "{stage.name}": timezone must be an IANA name such as "Europe/Berlin"']
    try:
        parse_schedule(stage.schedule, stage.timezone)
    except ScheduleError as exc:
        return [f'job "{stage.name}": {exc}']
    return []


def register_checks() -> None:
    """Plug ``check_schedule`` into the loader (once, however often this is called)."""
    from engine.loader import STAGE_CHECKS

    if check_schedule not in STAGE_CHECKS:
        STAGE_CHECKS.append(check_schedule)
