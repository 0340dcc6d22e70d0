"""Checking answers: built-in per-field checks, then cross-field rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.forms.fields import Field


@dataclass(frozen=True)
class Rule:
    """A cross-field check: when ``check(answers)`` is false, ``message`` shows on ``field``.

    Rules run only once every field of the page passed its own checks, so a rule may rely on
    required answers being present and well-typed.
    """

    check: Callable[[dict[str, Any]], bool]
    field: str
    message: str


def validate_answers(
    fields: Iterable[Field], rules: Iterable[Rule], answers: Mapping[str, Any]
) -> dict[str, str]:
    """Errors by field name for ``answers`` against ``fields`` and ``rules`` (empty = valid)."""
    fields = list(fields)
    errors: dict[str, str] = {}
    for f in fields:
        problem = f.error(answers.get(f.name))
        if problem:
            errors[f.name] = problem
    if errors:
        return errors
    names = {f.name for f in fields}
    snapshot = dict(answers)
    for rule in rules:
        if rule.field in names and rule.field not in errors and not rule.check(snapshot):
            errors[rule.field] = rule.message
    return errors
