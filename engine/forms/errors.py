"""The error forms raise when a form definition is wrong."""

from __future__ import annotations

from engine.errors import FlowbotError


class FormError(FlowbotError):
    """Raised when a form definition is invalid (bad options, Slack limits, unknown page...)."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        self.problems = problems if problems is not None else [message]
        super().__init__(message)
