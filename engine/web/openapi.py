"""The OpenAPI 3.1 description of ``/api`` (served at ``GET /api/openapi.json``).

Written by hand beside the routes it describes; the test suite checks every response it gets
from the API against it (tests/integration/test_openapi.py, with ``openapi-core``), so a route
or field that drifts from this document fails a test.
"""

from __future__ import annotations

from typing import Any

VERSION = "1"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str | list[str], **extra: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"], **extra}


STRING, INTEGER, OBJECT = {"type": "string"}, {"type": "integer"}, {"type": "object"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = _nullable("string", format="date-time")

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {
            "error": STRING,
            "errors": {"type": "object", "additionalProperties": STRING,
                       "description": "per-field messages (422)"},
            "by": _nullable("string", description="who completed the task first (409)"),
            "at": _nullable("string", description="when they did (409)"),
            "state": {"type": "string", "description": "the state that refused the operation (409)"},
            "reason": {"type": "string", "enum": ["timed out", "decided",
                                                  "you started this run, so you cannot decide on its approval: "
                                                  "someone else must"],
                       "description": "why a submission was refused: the task's timeout closed it, the person "
                                      "already decided on this approval, or they started the run (403)"},
            "correlation_id": STRING,
        },
    },
    "WorkflowSummary": {"type": "object", "required": ["name", "title", "stages"],
                        "properties": {"name": STRING, "title": STRING, "stages": INTEGER}},
    "Graph": {"type": "object", "required": ["name", "title", "nodes", "edges"],
              "properties": {"name": STRING, "title": STRING,
                             "nodes": {"type": "array", "items": {"type": "object", "required": ["id", "kind"]}},
                             "edges": {"type": "array", "items": {
                                 "type": "object", "required": ["source", "target", "on"],
                                 "properties": {"source": STRING, "target": STRING,
                                                "on": _nullable("array", items=STRING)}}}}},
    "Started": {"type": "object", "required": ["run_id"],
                "properties": {"run_id": STRING, "task_id": INTEGER, "workflow": STRING, "rerun_of": STRING}},
    "RunSummary": {"type": "object", "required": ["id", "workflow", "status", "created_at"],
                   "properties": {"id": STRING, "workflow": STRING, "status": _ref("RunStatus"), "trigger": OBJECT,
                                  "error": _nullable("string"), "created_at": STRING, "updated_at": STRING,
                                  "finished_at": _nullable("string"), "rerun_of": _nullable("string"),
                                  "test": {"type": "boolean"}}},
    "RunStatus": {"type": "string", "enum": ["running", "waiting", "completed", "failed", "cancelled"]},
    "TaskStatus": {"type": "string", "enum": ["pending", "locked", "completed", "failed", "cancelled"]},
    "Assignee": _nullable("object", properties={"users": {"type": "array", "items": STRING}, "team": STRING,
                                                "claimed_by": STRING}),
    "Step": {"type": "object",
             "required": ["stage", "task_id", "type", "status", "attempts", "started_at", "finished_at", "error"],
             "properties": {"stage": STRING, "task_id": INTEGER, "kind": STRING, "type": STRING,
                            "status": STRING, "attempts": INTEGER, "payload": OBJECT,
                            "started_at": _nullable("string"), "finished_at": _nullable("string"),
                            "error": _nullable("string"), "log": {"type": "array"}, "assignee": _ref("Assignee"),
                            "completed_by": _nullable("string"),
                            "deadline": {"type": "string", "description": "when a pending form task times out"}}},
    "AuditEntry": {"type": "object", "required": ["at", "actor", "edge", "action"],
                   "properties": {"id": INTEGER, "at": STRING, "actor": STRING, "acting_as": _nullable("string"),
                                  "on_behalf_of": _nullable("string"),
                                  "edge": {"type": "string", "enum": ["slack", "api", "cli", "web", "engine"]},
                                  "action": STRING, "workflow": _nullable("string"), "run_id": _nullable("string"),
                                  "task_id": _nullable("integer"), "detail": OBJECT}},
    "Report": {"type": "object",
               "required": ["id", "workflow", "status", "context", "steps", "unrouted", "audit", "reruns",
                            "rerun_of"],
               "properties": {"id": STRING, "workflow": STRING, "status": _ref("RunStatus"), "trigger": OBJECT,
                              "test": {"type": "boolean"}, "context": OBJECT, "error": _nullable("string"),
                              "created_at": STRING,
                              "finished_at": _nullable("string"), "steps": {"type": "array", "items": _ref("Step")},
                              "unrouted": {"type": "array"}, "waiting_joins": {"type": "array"},
                              "rerun_of": _nullable("string"), "reruns": {"type": "array", "items": STRING},
                              "audit": {"type": "array", "items": _ref("AuditEntry")}}},
    "TaskRow": {"type": "object", "required": ["id", "run_id", "workflow", "stage", "status", "attempts"],
                "properties": {"id": INTEGER, "run_id": STRING, "workflow": STRING, "stage": STRING, "kind": STRING,
                               "type": STRING, "status": _ref("TaskStatus"), "attempts": INTEGER,
                               "max_attempts": INTEGER, "assignee": _ref("Assignee"), "error": _nullable("string"),
                               "created_at": STRING, "started_at": _nullable("string"),
                               "finished_at": _nullable("string"),
                               "deadline": _nullable("string", description="when a pending form task times out")}},
    "Cancelled": {"type": "object", "required": ["run_id", "status", "tasks_cancelled", "by"],
                  "properties": {"run_id": STRING, "status": {"const": "cancelled"}, "tasks_cancelled": INTEGER,
                                 "by": STRING, "reason": _nullable("string"),
                                 "children_cancelled": {"type": "array", "items": STRING,
                                                        "description": "the open runs it started, cancelled with it"}}},
    "Retried": {"type": "object", "required": ["run_id", "status", "retried"],
                "properties": {"run_id": STRING, "task_id": INTEGER, "status": STRING,
                               "retried": {"type": "array", "items": INTEGER}}},
    "TaskDone": {"type": "object", "required": ["task_id", "run_id"],
                 "properties": {"task_id": INTEGER, "run_id": STRING,
                                "status": {"type": "string", "description": "completed; or recorded: a decision on "
                                           "an approval needing several people, kept while it waits for more"},
                                "by": STRING,
                                "action": {"type": "string", "enum": ["submit", "approve", "decline"]},
                                "claimed_by": STRING, "assignee": _ref("Assignee"),
                                "approvals": INTEGER, "needed": INTEGER,
                                "decisions": {"type": "array", "items": _ref("Decision")}}},
    "Decision": {"type": "object", "required": ["by", "decision", "at"],
                 "properties": {"by": STRING, "decision": {"type": "string", "enum": ["approved", "declined"]},
                                "comment": _nullable("string"), "at": STRING}},
    "Effect": {"type": "object", "required": ["id", "kind", "status", "attempts", "age_seconds"],
               "properties": {"id": INTEGER, "kind": STRING, "status": {"type": "string",
                                                                         "enum": ["pending", "failed"]},
                              "target": _nullable("string"), "task_id": _nullable("integer"),
                              "run_id": _nullable("string"), "attempts": INTEGER, "error": _nullable("string"),
                              "created_at": STRING, "age_seconds": {"type": "number"}}},
    "EffectChanged": {"type": "object", "required": ["id", "status"],
                      "properties": {"id": INTEGER, "status": {"type": "string", "enum": ["pending", "discarded"]}}},
    "Token": {"type": "object", "required": ["id", "user", "role", "prefix"],
              "properties": {"id": INTEGER, "user": STRING, "role": {"type": "string", "enum": ["admin", "member"]},
                             "prefix": STRING, "created_by": _nullable("string"), "created_at": STRING,
                             "expires_at": _nullable("string"), "revoked_at": _nullable("string"),
                             "token": {"type": "string", "description": "the token itself: only when created"}}},
    "TokenRevoked": {"type": "object", "required": ["id", "user", "revoked"],
                     "properties": {"id": INTEGER, "user": STRING, "revoked": {"const": True}}},
    "Me": {"type": "object", "required": ["person", "role"],
           "properties": {"person": STRING, "role": {"type": "string", "enum": ["admin", "member"]}}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


ERRORS = {
    "400": _error("bad input (not JSON, not an object, a payload over the limit)"),
    "401": _error("missing or wrong bearer token"),
    "403": _error("the token's person may not do this"),
    "404": _error("no such workflow, stage, run, task or effect"),
    "409": _error("the state of the run or task does not allow it (already done...); nothing changed"),
    "413": _error("request body over the limit"),
    "422": _error("invalid input, with per-field errors; nothing changed"),
    "503": _error("the database cannot be reached (see Retry-After)"),
}


def _ok(schema: dict[str, Any], status: str = "200", description: str = "done") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {"schema": schema}}}, **ERRORS}


def _body(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"required": False, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, kind: str = "string", description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}, "description": description}


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False,
             "schema": {"type": "integer" if n == "limit" else "string"}} for n in names]


RUN = _path_param("id", description="a run id, or a unique prefix of one")
TASK = _path_param("id", description="a task id")
EFFECT = _path_param("id", description="an outbox effect id")
WORKFLOW = _path_param("name", description="a workflow name")


def _op(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    return op


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


PATHS: dict[str, Any] = {
    "/workflows": {"get": _op("The loaded workflows", _ok(_array("WorkflowSummary")))},
    "/workflows/{name}": {"get": _op("One workflow's graph", _ok(_ref("Graph")), params=[WORKFLOW])},
    "/workflows/{name}/runs": {"post": _op(
        "Start a run (at its start stage, or `stage`)", _ok(_ref("Started"), "201", "started"), params=[WORKFLOW],
        body=_body({"payload": OBJECT, "stage": STRING, "test": {"type": "boolean"}}))},
    "/workflows/{name}/start": {"post": _op(
        "Submit the workflow's start form", _ok(_ref("Started"), "201", "started"), params=[WORKFLOW],
        body=_body({"answers": OBJECT, "payload": OBJECT}))},
    "/runs": {"get": _op("Runs the token's person may see, newest first", _ok(_array("RunSummary")),
                         params=_query("workflow", "status", "limit"))},
    "/runs/{id}": {"get": _op("A run's execution report, with its audit trail and rerun links",
                              _ok(_ref("Report")), params=[RUN])},
    "/runs/{id}/cancel": {"post": _op("Cancel a running or waiting run", _ok(_ref("Cancelled")), params=[RUN],
                                      body=_body({"reason": STRING}))},
    "/runs/{id}/retry": {"post": _op("Run a failed run's failed tasks again", _ok(_ref("Retried")), params=[RUN],
                                     body=_body({}))},
    "/runs/{id}/rerun": {"post": _op("A new run of the same start, linked to this one",
                                     _ok(_ref("Started"), "201", "started"), params=[RUN],
                                     body=_body({"payload": OBJECT}))},
    "/tasks": {"get": _op("Tasks, newest first", _ok(_array("TaskRow")),
                          params=_query("stage", "status", "run", "workflow", "limit"))},
    "/tasks/{id}/submit": {"post": _op("Submit a form task's answers (an approval: decision, comment)",
                                       _ok(_ref("TaskDone")), params=[TASK], body=_body({"answers": OBJECT}))},
    "/tasks/{id}/claim": {"post": _op("Claim a team task", _ok(_ref("TaskDone")), params=[TASK], body=_body({}))},
    "/tasks/{id}/reassign": {"post": _op("Give a task to someone else (email, Slack user id or @team)",
                                         _ok(_ref("TaskDone")), params=[TASK], body=_body({"to": STRING}, ["to"]))},
    "/tasks/{id}/retry": {"post": _op("Run a failed task again", _ok(_ref("Retried")), params=[TASK],
                                      body=_body({}))},
    "/outbox": {"get": _op("Effects waiting or failed, oldest first", _ok(_array("Effect")),
                           params=_query("status", "limit"))},
    "/outbox/{id}/retry": {"post": _op("Deliver a failed effect again", _ok(_ref("EffectChanged")),
                                       params=[EFFECT], body=_body({}))},
    "/outbox/{id}/discard": {"post": _op("Never deliver an effect", _ok(_ref("EffectChanged")), params=[EFFECT],
                                         body=_body({}))},
    "/tokens": {
        "get": _op("Every API token, without the tokens themselves (admins)", _ok(_array("Token"))),
        "post": _op("A token for a person, shown this once (admins)", _ok(_ref("Token"), "201", "created"),
                    body=_body({"user": STRING, "role": {"type": "string", "enum": ["admin", "member"]},
                                "expires": {"type": "string", "description": "e.g. 90d, 12h"}}, ["user"]))},
    "/tokens/{id}": {"delete": _op("Revoke a token: it stops working at once (admins)", _ok(_ref("TokenRevoked")),
                                   params=[_path_param("id", "integer", "a token id")])},
    "/audit": {"get": _op("The audit trail, newest first", _ok(_array("AuditEntry")),
                          params=_query("run", "actor", "since", "limit"))},
    "/events": {"post": _op(
        "An event for waiting runs", _ok({"type": "object", "required": ["event_id", "name", "key", "matched"],
                                          "properties": {"event_id": INTEGER, "name": STRING, "key": STRING,
                                                         "matched": INTEGER}}, "201", "published"),
        body=_body({"name": STRING, "key": STRING, "payload": OBJECT}, ["name", "key"]))},
    "/me": {"get": _op("Who the token acts as", _ok(_ref("Me")))},
    "/openapi.json": {"get": {"summary": "This document", "security": [],
                              "responses": {"200": {"description": "OpenAPI 3.1",
                                                    "content": {"application/json": {"schema": OBJECT}}}}}},
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``/api``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "flowbot API", "version": VERSION,
                 "description": "Workflows, runs, tasks and operations on them. Bearer token: FLOWBOT_API_TOKEN "
                                "(an admin; X-Flowbot-As: PERSON acts as that person) or a person's token."},
        "servers": [{"url": "/api"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
