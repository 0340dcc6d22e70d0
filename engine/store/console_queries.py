"""Every statement the web console sends: sign-in links, the board, the inbox, workflow figures.

The board's statements are composed from fixed fragments (one per filter given), not one
statement with ``(:x IS NULL OR ...)`` for every filter: Postgres plans each combination for
what it filters, so a board filtered by workflow walks the (workflow, created_at) index and an
unfiltered one the (status, created_at) index.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import TextClause, text

# ---------------------------------------------------------------------------------------------
# One-time links
# ---------------------------------------------------------------------------------------------

# -- name: insert_link -- a one-time link (its token's hash only).
INSERT_LINK = text(
    """
    INSERT INTO console_links (token_hash, person, role, purpose, task_id, created_at, expires_at)
    VALUES (:token_hash, :person, :role, :purpose, :task_id, CAST(:now AS timestamptz),
            CAST(:expires_at AS timestamptz))
    """
)

# -- name: use_link -- spend a link: only an unused, unexpired one is spent, once.
USE_LINK = text(
    """
    UPDATE console_links SET used_at = CAST(:now AS timestamptz)
    WHERE token_hash = :token_hash AND used_at IS NULL AND expires_at > CAST(:now AS timestamptz)
    RETURNING person, role, purpose, task_id
    """
)

# -- name: delete_expired_links -- links past their life (spent or not).
DELETE_EXPIRED_LINKS = text("DELETE FROM console_links WHERE expires_at <= CAST(:now AS timestamptz)")

# -- name: mail_queued -- whether a mail of :kind (assignment, reminder) to :to about a task is in the outbox.
MAIL_QUEUED = text(
    "SELECT id FROM outbox WHERE task_id = :task_id AND kind = :kind AND payload ->> 'to' = :to"
)

# ---------------------------------------------------------------------------------------------
# Inbox
# ---------------------------------------------------------------------------------------------

def inbox(n_patterns: int) -> TextClause:
    """-- name: inbox -- form tasks waiting on a person or one of their teams, newest first: each
    of ``:p0``..``:pN`` is a JSON containment pattern (``{"users": [name]}``, ``{"team": handle}``)
    that ix_tasks_pending_form_assignee finds."""
    matches = " OR ".join(f"assignee @> CAST(:p{i} AS jsonb)" for i in range(n_patterns)) or "FALSE"
    return text(
        f"""
        SELECT id, run_id, workflow, stage, type, payload, assignee, created_at FROM tasks
        WHERE status = 'pending' AND kind = 'form' AND ({matches})
          AND NOT (assignee ? 'claimed_by' AND NOT assignee -> 'users' ?| CAST(:names AS text[]))
        ORDER BY created_at DESC, id DESC
        LIMIT :limit
        """
    )


# ---------------------------------------------------------------------------------------------
# Board
# ---------------------------------------------------------------------------------------------

#: The filters of the board, each a fragment over ``runs r`` (given only when the filter is).
RUN_FILTERS: dict[str, str] = {
    "workflow": "r.workflow = :workflow",
    "status": "r.status = :status",
    "started_by": "r.trigger ->> 'user' = :started_by",
    "since": "r.created_at >= CAST(:since AS timestamptz)",
    "until": "r.created_at < CAST(:until AS timestamptz)",
    "stage": "EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.id AND t.stage = :stage)",
    "assignee": (
        "EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.id AND t.kind = 'form' AND"
        " (t.assignee -> 'users' ? :assignee OR t.assignee ->> 'team' = :assignee"
        " OR t.assignee ->> 'claimed_by' = :assignee OR t.completed_by = :assignee))"
    ),
    # Text anywhere in the payloads of the run's tasks (case-insensitive).
    "text": "EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.id AND t.payload::text ILIKE :text)",
    # Keyset pagination: strictly older than the last card shown.
    "before": "(r.created_at, r.id) < (CAST(:before_at AS timestamptz), CAST(:before_id AS uuid))",
}

#: A column's count stops here ("1,000+"): exact counts of a million runs cost a scan each.
COUNT_CAP = 1_000
#: Filters that look into each run's tasks: a column under them is not counted (a count would
#: read the tasks of every run of the range), it shows how many it holds so far.
UNCOUNTED = ("text", "assignee", "stage")


def _where(filters: Sequence[str]) -> str:
    return " AND ".join(RUN_FILTERS[f] for f in filters) or "TRUE"


def board_column(filters: Sequence[str]) -> TextClause:
    """-- name: board_column -- one column's runs, newest first (``:limit``), under ``filters``."""
    return text(
        f"""
        SELECT r.id, r.workflow, r.status, r.trigger, r.error, r.created_at, r.updated_at, r.finished_at
        FROM runs r WHERE {_where(filters)}
        ORDER BY r.created_at DESC, r.id DESC
        LIMIT :limit
        """
    )


def board_columns(filters: Sequence[str], *, counted: bool) -> TextClause:
    """-- name: board_columns -- every status column of the board in one statement: for each of
    :statuses, its newest :limit runs under ``filters`` (where each stands: the stages of its open
    or failed tasks) and, when ``counted``, how many it holds up to COUNT_CAP + 1."""
    where = _where(filters)
    # Counted once per column (a lateral beside the cards, not a subquery of each card's row).
    count = (f"SELECT count(*) AS n FROM (SELECT 1 FROM runs r WHERE r.status = s.status AND {where} "
             f"LIMIT {COUNT_CAP + 1}) c") if counted else "SELECT NULL::bigint AS n"
    return text(
        f"""
        SELECT s.status AS column_key, k.n AS column_count, r.*
        FROM unnest(CAST(:statuses AS text[])) WITH ORDINALITY AS s(status, n)
        CROSS JOIN LATERAL ({count}) k
        LEFT JOIN LATERAL (
            SELECT r.id, r.workflow, r.status, r.trigger, r.error, r.created_at, r.updated_at, r.finished_at,
                   (SELECT array_agg(DISTINCT t.stage ORDER BY t.stage) FROM tasks t
                    WHERE t.run_id = r.id AND t.status IN ('pending', 'locked', 'failed')) AS at
            FROM runs r WHERE r.status = s.status AND {where}
            ORDER BY r.created_at DESC, r.id DESC
            LIMIT :limit
        ) r ON TRUE
        ORDER BY s.n, r.created_at DESC, r.id DESC
        """
    )


def board_count(filters: Sequence[str]) -> TextClause:
    """-- name: board_count -- how many runs one column holds, counted up to COUNT_CAP + 1."""
    return text(f"SELECT count(*) FROM (SELECT 1 FROM runs r WHERE {_where(filters)} LIMIT {COUNT_CAP + 1}) c")


def stage_columns(filters: Sequence[str], *, counted: bool) -> TextClause:
    """-- name: stage_columns -- every stage column of one workflow's board in one statement: for
    each of :stages, the runs with an open or failed task there (newest task first, :limit), where
    each stands, and when ``counted`` how many such tasks (up to COUNT_CAP + 1)."""
    where = _where([f for f in filters if f not in ("workflow", "stage", "before")])
    join = "JOIN runs r ON r.id = t.run_id" if where != "TRUE" else ""
    open_at = "t.workflow = :workflow AND t.stage = s.stage AND t.status IN ('pending', 'locked', 'failed')"
    count = (f"SELECT count(*) AS n FROM (SELECT 1 FROM tasks t {join} WHERE {open_at} AND {where} "
             f"LIMIT {COUNT_CAP + 1}) c") if counted else "SELECT NULL::bigint AS n"
    return text(
        f"""
        SELECT s.stage AS column_key, k.n AS column_count, r.*
        FROM unnest(CAST(:stages AS text[])) WITH ORDINALITY AS s(stage, n)
        CROSS JOIN LATERAL ({count}) k
        LEFT JOIN LATERAL (
            SELECT r.id, r.workflow, r.status, r.trigger, r.error, r.created_at, r.updated_at, r.finished_at,
                   t.created_at AS at_stage, t.id AS task_id,
                   (SELECT array_agg(DISTINCT o.stage ORDER BY o.stage) FROM tasks o
                    WHERE o.run_id = r.id AND o.status IN ('pending', 'locked', 'failed')) AS at
            FROM tasks t JOIN runs r ON r.id = t.run_id
            WHERE {open_at} AND {where}
            ORDER BY t.created_at DESC, t.id DESC
            LIMIT :limit
        ) r ON TRUE
        ORDER BY s.n, r.at_stage DESC, r.task_id DESC
        """
    )


# -- name: change_mark -- a mark that moves whenever a task is created or changes status (the
# -- live board polls it: two index lookups).
CHANGE_MARK = text(
    "SELECT (SELECT coalesce(max(id), 0) FROM tasks) AS tasks, (SELECT coalesce(max(id), 0) FROM task_events) AS events"
)

# ---------------------------------------------------------------------------------------------
# Run page, tasks, outbox, workflows
# ---------------------------------------------------------------------------------------------

# -- name: run_events -- the status changes of a run's tasks, in order.
RUN_EVENTS = text(
    """
    SELECT e.task_id, t.stage, e.from_status, e.to_status, e.actor, e.reason, e.at
    FROM task_events e JOIN tasks t ON t.id = e.task_id
    WHERE t.run_id = :id ORDER BY e.at, e.id
    """
)

# -- name: console_tasks -- tasks newest first, filtered (workflow, stage, status, assignee).
CONSOLE_TASKS = text(
    """
    SELECT id, run_id, workflow, stage, kind, type, status, attempts, assignee, completed_by, created_at,
           finished_at
    FROM tasks
    WHERE (CAST(:workflow AS text) IS NULL OR workflow = :workflow)
      AND (CAST(:stage AS text) IS NULL OR stage = :stage)
      AND (CAST(:status AS text) IS NULL OR status = :status)
      AND (CAST(:assignee AS text) IS NULL OR assignee -> 'users' ? :assignee
           OR assignee ->> 'team' = :assignee OR completed_by = :assignee)
      AND (CAST(:before AS bigint) IS NULL OR id < :before)
    ORDER BY id DESC
    LIMIT :limit
    """
)

# -- name: console_outbox -- effects waiting or failed, oldest first.
CONSOLE_OUTBOX = text(
    """
    SELECT id, kind, payload, task_id, run_id, status, attempts, error, available_at, created_at
    FROM outbox WHERE status = ANY(CAST(:statuses AS text[]))
    ORDER BY id LIMIT :limit
    """
)

# -- name: workflow_figures -- a workflow's finished runs since :since: count by status and the
# -- median duration of the completed ones (test runs left out: they would skew the success rate).
WORKFLOW_FIGURES = text(
    """
    SELECT count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE status IN ('running', 'waiting')) AS open,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
               FILTER (WHERE status = 'completed') AS median_seconds
    FROM runs WHERE workflow = :workflow AND created_at >= CAST(:since AS timestamptz) AND NOT test
    """
)
