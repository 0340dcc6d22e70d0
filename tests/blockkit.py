"""Block Kit assertions for tests: a Block Kit JSON schema plus flowbot's own limit checks.

The schema (``tests/data/blockkit/``, with its licence and source) is the Tightknit Slack Block
Kit schema, draft 2020-12; views are validated through a wrapper schema pointing at its
``$defs``, since a ``$ref`` beside the root's ``"type": "array"`` would fail every view.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from bot.limits import check_message_limits, check_view_limits

SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "blockkit" / "slack-block-kit.schema.json"


@cache
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


@cache
def validator(ref: str | None = None) -> Draft202012Validator:
    """A cached validator of ``#/$defs/<ref>``, or of the root (an array of blocks) for None."""
    schema = _schema()
    if ref is None:
        return Draft202012Validator(schema)
    return Draft202012Validator(
        {
            "$schema": schema["$schema"],
            "$id": schema["$id"],
            "$defs": schema["$defs"],
            "$ref": f"#/$defs/{ref}",
        }
    )


def _describe(error: ValidationError) -> str:
    path = "/".join(str(p) for p in error.absolute_path) or "(root)"
    # oneOf failures hide the useful reason in the deepest matching branch.
    best = error
    while best.context:
        best = max(best.context, key=lambda e: len(e.absolute_path))
    detail = f" [{best.message}]" if best is not error else ""
    return f"{path}: {error.message[:300]}{detail}"


def schema_errors(instance: Any, ref: str | None = None) -> list[str]:
    """Every schema violation of ``instance`` against ``#/$defs/<ref>`` (root for None)."""
    errors = sorted(validator(ref).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [_describe(e) for e in errors]


def _fail(kind: str, problems: list[str], instance: Any) -> None:
    if problems:
        dump = json.dumps(instance, indent=1)[:4000]
        raise AssertionError(f"invalid {kind}:\n  " + "\n  ".join(problems) + f"\n{dump}")


def assert_valid_modal(view: dict[str, Any]) -> None:
    """Fail unless ``view`` is a modal Slack accepts (schema and limits)."""
    _fail("modal", schema_errors(view, "modal_view") + check_view_limits(view), view)


def assert_valid_home(view: dict[str, Any]) -> None:
    """Fail unless ``view`` is a Home tab view Slack accepts (schema and limits)."""
    _fail("home view", schema_errors(view, "home_view") + check_view_limits(view), view)


def assert_valid_blocks(blocks: list[dict[str, Any]]) -> None:
    """Fail unless ``blocks`` are message blocks Slack accepts (schema and limits)."""
    _fail("blocks", schema_errors(blocks) + check_message_limits(blocks), blocks)
