"""The Slack app's own tables: cards posted about tasks, and the email -> Slack user cache.

Every statement about Slack's tables is here, beside the functions that run it; the engine's
statements (``engine.store.queries``) know nothing of Slack. Runs and tasks change only through
the engine (``engine.store.tasks``, ``engine.people``). Three statements read them, joined with
Slack's cards, to answer "what concerns this Slack user" (the Home tab, ``/flowbot tasks`` and
``/flowbot status``): one indexed read each, read-only.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from engine.store.db import Database, Row

# -- name: record_slack_message -- a card about a task was posted (keeps channel and ts).
RECORD_SLACK_MESSAGE = text(
    """
    INSERT INTO slack_task_messages (task_id, recipient, channel, ts, kind, created_at)
    VALUES (:task_id, :recipient, :channel, :ts, :kind, CAST(:now AS timestamptz))
    ON CONFLICT (task_id, recipient) DO UPDATE SET channel = EXCLUDED.channel, ts = EXCLUDED.ts,
                                                   kind = EXCLUDED.kind
    """
)

# -- name: slack_messages_for_task -- every card posted about a task.
SLACK_MESSAGES_FOR_TASK = text(
    "SELECT recipient, channel, ts, kind FROM slack_task_messages WHERE task_id = :task_id ORDER BY created_at"
)

# -- name: get_slack_user -- a cached email → Slack user id.
GET_SLACK_USER = text("SELECT user_id FROM slack_users WHERE email = :email")

# -- name: put_slack_user -- cache an email → Slack user id.
PUT_SLACK_USER = text(
    """
    INSERT INTO slack_users (email, user_id, updated_at) VALUES (:email, :user_id, CAST(:now AS timestamptz))
    ON CONFLICT (email) DO UPDATE SET user_id = EXCLUDED.user_id, updated_at = EXCLUDED.updated_at
    """
)



# -- name: my_pending_form_tasks -- form tasks waiting on one Slack user: assigned to their id or
# -- to an email cached for it, or a team task not claimed yet whose claim card was sent to them;
# -- not one they have decided on already (an approval needing several people).
MY_PENDING_FORM_TASKS = text(
    """
    SELECT t.id, t.run_id, t.workflow, t.stage, t.type, t.payload, t.assignee, t.created_at
    FROM tasks t
    WHERE t.status = 'pending' AND t.kind = 'form'
      AND (
        EXISTS (SELECT 1 FROM jsonb_array_elements_text(
                    CASE WHEN jsonb_typeof(t.assignee -> 'users') = 'array' THEN t.assignee -> 'users'
                         ELSE '[]'::jsonb END) AS u(who)
                WHERE u.who = :user
                   OR lower(u.who) IN (SELECT email FROM slack_users WHERE user_id = :user))
        OR EXISTS (SELECT 1 FROM slack_task_messages m WHERE m.task_id = t.id
                   AND (m.recipient = :user
                        OR (m.recipient = 'claim:' || :user AND t.assignee ->> 'claimed_by' IS NULL)))
      )
      -- An approval needing several people that this person has decided on waits for others.
      AND NOT EXISTS (SELECT 1 FROM task_decisions d WHERE d.task_id = t.id AND d.person = :user)
    ORDER BY t.created_at, t.id
    LIMIT :limit
    """
)

# -- name: my_recent_runs -- runs a Slack user started, or took part in, newest first.
# -- (each branch reads its own index: runs started by a person, form tasks by completer, cards by
# -- recipient; the newest :limit of each, then the newest :limit of them all)
MY_RECENT_RUNS = text(
    """
    SELECT r.id, r.workflow, r.status, r.error, r.created_at, r.updated_at, r.finished_at
    FROM runs r
    WHERE r.id IN (
        (SELECT id FROM runs WHERE (trigger ->> 'user') IS NOT NULL AND trigger ->> 'user' = :user
         ORDER BY created_at DESC LIMIT :limit)
        UNION
        (SELECT run_id FROM tasks WHERE kind = 'form' AND completed_by = :user ORDER BY id DESC LIMIT :limit)
        UNION
        (SELECT t.run_id FROM slack_task_messages m JOIN tasks t ON t.id = m.task_id
         WHERE m.recipient IN (:user, 'claim:' || :user) ORDER BY m.task_id DESC LIMIT :limit)
    )
    ORDER BY r.created_at DESC, r.id
    LIMIT :limit
    """
)

# -- name: took_part_in_run -- whether a Slack user started a run, completed one of its form
# -- tasks, or was sent a card about one of them (what MY_RECENT_RUNS calls taking part).
TOOK_PART_IN_RUN = text(
    """
    SELECT EXISTS (SELECT 1 FROM runs WHERE id = CAST(:run AS uuid) AND trigger ->> 'user' = :user)
        OR EXISTS (SELECT 1 FROM tasks WHERE run_id = CAST(:run AS uuid) AND kind = 'form' AND completed_by = :user)
        OR EXISTS (SELECT 1 FROM slack_task_messages m JOIN tasks t ON t.id = m.task_id
                   WHERE t.run_id = CAST(:run AS uuid) AND m.recipient IN (:user, 'claim:' || :user))
        AS took_part
    """
)


# -- name: delete_slack_messages -- forget a task's cards (it was reassigned: new cards follow).
DELETE_SLACK_MESSAGES = text("DELETE FROM slack_task_messages WHERE task_id = :task_id")

# -- name: person_aliases -- the other names of a person (email <-> Slack user id, as cached).
PERSON_ALIASES = text(
    """
    SELECT user_id AS alias FROM slack_users WHERE email = lower(:who)
    UNION
    SELECT email FROM slack_users WHERE user_id = :who
    """
)


# --- cards ---------------------------------------------------------------------------------------


async def record_card(db: Database, task_id: int, recipient: str, channel: str, ts: str, kind: str) -> None:
    """A card about ``task_id`` was posted to ``recipient`` (kept: channel and ts, to update it)."""
    async with db.transaction() as tx:
        await tx.execute(RECORD_SLACK_MESSAGE, {"task_id": task_id, "recipient": recipient, "channel": channel,
                                                "ts": ts, "kind": kind, "now": dt.datetime.now(dt.UTC)})


async def cards(db: Database, task_id: int) -> list[Row]:
    """Every card posted about a task (recipient, channel, ts, kind), oldest first."""
    return await db.fetch_all(SLACK_MESSAGES_FOR_TASK, {"task_id": task_id})


async def forget_cards(db: Database, task_id: int) -> None:
    """Forget a task's cards (it was reassigned: new cards follow)."""
    async with db.transaction() as tx:
        await tx.execute(DELETE_SLACK_MESSAGES, {"task_id": task_id})


# --- the email -> user id cache ------------------------------------------------------------------


async def cached_user(db: Database, email: str) -> str | None:
    """The Slack user id cached for ``email`` (lower-cased), if any."""
    row = await db.fetch_one(GET_SLACK_USER, {"email": email})
    return str(row["user_id"]) if row else None


async def aliases(db: Database, person: str) -> set[str]:
    """The other names of ``person`` as cached: the Slack id of an email, the email of a Slack id."""
    return {str(r["alias"]) for r in await db.fetch_all(PERSON_ALIASES, {"who": person})}


async def cache_user(db: Database, email: str, user_id: str) -> None:
    """Remember that ``email`` is ``user_id`` in this workspace."""
    async with db.transaction() as tx:
        await tx.execute(PUT_SLACK_USER, {"email": email, "user_id": user_id, "now": dt.datetime.now(dt.UTC)})


# --- what concerns a Slack user --------------------------------------------------------------------


async def pending_tasks(db: Database, user_id: str, limit: int) -> list[Row]:
    """Form tasks waiting on ``user_id`` (assigned to them, or to a team they were asked in)."""
    return await db.fetch_all(MY_PENDING_FORM_TASKS, {"user": user_id, "limit": limit})


async def recent_runs(db: Database, user_id: str, limit: int) -> list[Row]:
    """Runs ``user_id`` started or took part in, newest first."""
    return await db.fetch_all(MY_RECENT_RUNS, {"user": user_id, "limit": limit})


async def took_part(db: Database, run_id: str, user_id: str) -> bool:
    """Whether ``user_id`` started the run, answered one of its forms or was sent a card of it."""
    row = await db.fetch_one(TOOK_PART_IN_RUN, {"run": run_id, "user": user_id})
    return bool(row and row["took_part"])
