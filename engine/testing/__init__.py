"""flowbot's test kit for workflow authors: a pytest plugin (installed with flowbot) whose ``flow``
fixture gives each test a throwaway database, the engine running in-process (worker, outbox,
HTTP server), a fake Slack, an SMTP catcher and a clock the test moves.

    async def test_an_expense_is_paid_once_the_manager_approves(flow):
        run = await flow.trigger("expense", {"employee": "Ann", "amount": 42.5,
                                             "description": "Taxi", "manager_email": "bob@example.com"})
        await run.task("review").approve(as_="bob@example.com")
        report = await run.wait()
        assert report.status == "completed" and report.stages == ["expense", "review", "pay"]

See docs/testing.md. The modules: ``kit`` (``Flow``), ``handles`` (``Run``, ``Task``, ``Report``),
``running`` (the engine and its passes), ``clock``, ``slack`` and ``fakeslack``, ``mail``,
``postgres`` (the session's server and per-test databases), ``plugin`` (the fixtures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.testing.handles import FlowTestError, Report, Run, Task
    from engine.testing.kit import Flow, open_flow

__all__ = ["Flow", "FlowTestError", "Report", "Run", "Task", "open_flow"]

_WHERE = {"Flow": "kit", "open_flow": "kit", "FlowTestError": "handles", "Report": "handles", "Run": "handles",
          "Task": "handles"}


def __getattr__(name: str) -> Any:
    # Imported on first use: the pytest plugin imports this package in every pytest run.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"engine.testing.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'engine.testing' has no attribute {name!r}")
