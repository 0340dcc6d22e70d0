"""Form sessions: the answers of a form in progress, page by page, until it is submitted.

A session is what a modal (or a web form) carries between pages: its id rides in the view's
private metadata. A task's completion closes the session its answers came from itself
(``Finished.session``), in the same statement.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from engine.store import queries
from engine.store.db import Database, Row

#: How long an opened form keeps its answers (a person may leave a modal open a while).
SESSION_TTL_SECONDS = 6 * 3600



async def open_session(db: Database, *, user_id: str, workflow: str, stage: str, task_id: int | None = None,
                       payload: dict[str, Any] | None = None, page: str | None = None, purpose: str = "form",
                       now: dt.datetime, ttl: int = SESSION_TTL_SECONDS) -> str:
    """A new form session; returns its id (what a modal's private_metadata carries). Sessions
    abandoned past their expiry are forgotten on the way."""
    async with db.transaction() as tx:
        await tx.execute(queries.DELETE_EXPIRED_FORM_SESSIONS, {"now": now})
        sid = await tx.fetch_value(queries.INSERT_FORM_SESSION, {
            "task_id": task_id, "workflow": workflow, "stage": stage, "purpose": purpose, "user_id": user_id,
            "payload": payload or {}, "page": page, "now": now, "ttl": ttl,
        })
    return str(sid)


async def get_session(db: Database, session_id: str, *, now: dt.datetime) -> Row | None:
    """An unexpired session, or None (also for a malformed id)."""
    try:
        uuid.UUID(session_id)
    except ValueError:
        return None
    return await db.fetch_one(queries.GET_FORM_SESSION, {"id": session_id, "now": now})


async def get_submission(db: Database, session_id: str, *, now: dt.datetime
                         ) -> tuple[Row, Row | None, dict[str, Any]] | None:
    """An unexpired session with its task row (None for a start form) and the run's context, in
    one read; None when there is no such session (also for a malformed id)."""
    return (await get_submissions(db, [session_id], now=now)).get(session_id)


async def get_submissions(db: Database, session_ids: list[str], *, now: dt.datetime
                          ) -> dict[str, tuple[Row, Row | None, dict[str, Any]]]:
    """``get_submission`` of many sessions in one read, by session id (a malformed or unknown
    id, or an expired session, is left out)."""
    asked: dict[str, list[str]] = {}  # canonical id -> the ids as asked for
    for session_id in session_ids:
        try:
            asked.setdefault(str(uuid.UUID(session_id)), []).append(session_id)
        except ValueError:
            continue
    if not asked:
        return {}
    found: dict[str, tuple[Row, Row | None, dict[str, Any]]] = {}
    rows = await db.fetch_all(queries.FORM_SUBMISSION_CONTEXTS,
                              {"ids": [uuid.UUID(i) for i in asked], "now": now})
    for row in rows:
        task = dict(row)
        session = task.pop("form_session")
        run_context = task.pop("run_context", None) or {}
        for session_id in asked.get(str(session["id"]), []):
            found[session_id] = (session, (task if task.get("id") is not None else None), run_context)
    return found


async def save_session(db: Database, session_id: str, *, answers: dict[str, Any], page: str | None,
                       view_id: str | None = None) -> None:
    """Merge a page's answers into the session and remember the page shown next."""
    async with db.transaction() as tx:
        await tx.execute(queries.SAVE_FORM_SESSION,
                         {"id": session_id, "answers": answers, "page": page, "view_id": view_id})


async def close_session(db: Database, session_id: str) -> None:
    """Forget a session (its form was submitted). A task's completion closes the session its
    answers came from itself (``Finished.session``)."""
    await db.fetch_one(queries.DELETE_FORM_SESSIONS, {"ids": [session_id]})
