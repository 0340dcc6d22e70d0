"""``task``, as a stage receives it: a read-only mapping of its payload, with id, type, run id."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from engine.context import Task


def _task() -> Task:
    return Task(7, "expense", {"amount": 3, "lines": [1, 2]}, "0192-run", "review")


def test_a_task_spreads_into_a_new_dict_like_its_payload() -> None:
    task = _task()
    assert isinstance(task, Mapping)
    assert {**task, "total": 1} == {"amount": 3, "lines": [1, 2], "total": 1}
    assert dict(task) == task.payload and list(task) == ["amount", "lines"] and len(task) == 2
    assert sorted(task.items()) == [("amount", 3), ("lines", [1, 2])]
    assert (task.id, task.type, task.run_id) == (7, "expense", "0192-run")


def test_a_task_cannot_be_changed_through_what_it_hands_out() -> None:
    task = _task()
    with pytest.raises(TypeError):
        task["amount"] = 4  # type: ignore[index]
    spread = {**task}
    spread["lines"].append(3)
    task.payload["lines"].append(4)
    task["lines"].append(5)
    assert task["lines"] == [1, 2]
