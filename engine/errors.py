"""The one error tree of flowbot: every error the engine raises on purpose is a FlowbotError."""

from __future__ import annotations


class FlowbotError(Exception):
    """Raised for any error flowbot reports on purpose (the root of the tree)."""


# --- configuration and startup -------------------------------------------------------------


class ConfigError(FlowbotError):
    """Raised when the environment or command line configures flowbot wrongly."""


class DatabaseError(FlowbotError):
    """Raised when the database answers a statement with an error."""


class DatabaseUnavailable(DatabaseError):
    """Raised when the database cannot be reached or cannot take work right now (stopped,
    restarting, failing over, out of connections): nothing was done, try again shortly. Never the
    caller's fault: the HTTP edges answer 503 with ``Retry-After``, not a 4xx."""


class SchemaNotReady(DatabaseError):
    """Raised when the database schema is missing or older than this flowbot (run `flowbot migrate`)."""


# --- workflow definitions --------------------------------------------------------------------


class WorkflowError(FlowbotError):
    """Raised when a workflow definition is invalid; the message names file and line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class WorkflowLoadError(FlowbotError):
    """Raised when one or more workflows fail validation; holds every WorkflowError found."""

    def __init__(self, errors: list[WorkflowError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class UnknownWorkflow(FlowbotError):
    """Raised when a workflow name does not match any loaded workflow."""


class UnknownStage(FlowbotError):
    """Raised when a stage name does not match any stage of the workflow."""


class NotStartable(FlowbotError):
    """Raised when a manual run is asked to start at a stage that cannot begin one (a start form,
    a hook, a job)."""


# --- running stages --------------------------------------------------------------------------


class PayloadError(FlowbotError):
    """Raised when a task payload is not a JSON object or is over the size limit."""


class PayloadTooLarge(PayloadError):
    """Raised when a task payload is over the size limit."""


class TaskNotFound(FlowbotError):
    """Raised when a task id does not exist."""


class RunNotFound(FlowbotError):
    """Raised when a run id does not exist."""


class TaskStateError(FlowbotError):
    """Raised when a task is not in the status an operation needs (e.g. already completed)."""


class LeaseLost(FlowbotError):
    """Raised when a worker finishes a task whose lease another worker has taken over."""


# --- operations of people and operators ------------------------------------------------------


class Refused(FlowbotError):
    """Raised when an operation is refused (it changed nothing); ``status`` is its HTTP code
    and ``extra`` what the API adds to ``{"error": ...}``."""

    status = 400

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        # "error" and "status" are the answer's own keys.
        self.extra = {k: v for k, v in extra.items() if k not in ("error", "status")}


class NotFound(Refused):
    """Raised when an operation names a run, task, workflow, effect or token that does not exist."""

    status = 404


class Forbidden(Refused):
    """Raised when the acting person may not do an operation."""

    status = 403


class Conflict(Refused):
    """Raised when the state of a run or task does not allow an operation (already done...)."""

    status = 409


class Invalid(Refused):
    """Raised when an operation's input is invalid; ``errors`` are per-field messages."""

    status = 422

    def __init__(self, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message, **({"errors": errors} if errors else {}))
        self.errors = errors or {}
