"""The statements of timers, events and waits (``engine.store.waits``, ``engine.store.deadlines``).

Every change to the waits of one (event, key) happens under that pair's advisory lock. Times are
parameters, as in ``engine.store.queries``.
"""

from __future__ import annotations

from sqlalchemy import text

# ---------------------------------------------------------------------------------------------
# Timers, events and waits (engine.store.waits)
# ---------------------------------------------------------------------------------------------
# Every change to the waits of one (event, key) happens under that pair's advisory lock, taken
# before any run lock: an event arriving and a wait beginning at the same time see each other.

# -- name: lock_event_keys -- serialise events and waits on these (event, key) pairs (released at
# -- commit; always in the same order, so two transactions never wait on each other in a cycle).
LOCK_EVENT_KEYS = text(
    """
    SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))
    FROM (SELECT DISTINCT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS s
    """
)

# -- name: insert_events -- events as they arrive, kept for waits that begin later.
INSERT_EVENTS = text(
    """
    INSERT INTO events (name, key, payload, source, created_at)
    SELECT n, k, p, s, CAST(:now AS timestamptz)
    FROM unnest(CAST(:names AS text[]), CAST(:keys AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]),
                CAST(:sources AS text[])) WITH ORDINALITY AS x(n, k, p, s, ord)
    ORDER BY ord
    RETURNING id, name, key, payload
    """
)

# -- name: open_waits_for -- the pending wait tasks waiting on these (event, key) pairs, in live runs.
OPEN_WAITS_FOR = text(
    """
    SELECT w.event, w.key, t.*
    FROM (SELECT DISTINCT * FROM unnest(CAST(:names AS text[]), CAST(:keys AS text[]))) AS e(name, key)
    JOIN event_waits w ON w.event = e.name AND w.key = e.key
    JOIN tasks t ON t.id = w.task_id AND t.status = 'pending'
    JOIN runs r ON r.id = t.run_id AND r.status IN ('running', 'waiting')
    ORDER BY t.id
    """
)

# -- name: insert_waits -- waits that began: what they wait for, until when.
INSERT_WAITS = text(
    """
    INSERT INTO event_waits (task_id, run_id, event, key, deadline, created_at)
    SELECT * , CAST(:now AS timestamptz)
    FROM unnest(CAST(:task_ids AS bigint[]), CAST(:run_ids AS uuid[]), CAST(:events AS text[]),
                CAST(:keys AS text[]), CAST(:deadlines AS timestamptz[]))
    """
)

# -- name: early_events -- for waits that just began: the newest event on their (event, key) within
# -- the lookback that has not already completed the same wait stage of the same run.
EARLY_EVENTS = text(
    """
    SELECT w.task_id, e.id, e.payload
    FROM unnest(CAST(:task_ids AS bigint[]), CAST(:run_ids AS uuid[]), CAST(:stages AS text[]),
                CAST(:events AS text[]), CAST(:keys AS text[])) AS w(task_id, run_id, stage, event, key)
    CROSS JOIN LATERAL (
        SELECT e.id, e.payload FROM events e
        WHERE e.name = w.event AND e.key = w.key AND e.created_at >= CAST(:since AS timestamptz)
          AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.run_id = w.run_id AND d.stage = w.stage
                          AND d.completed_by = 'event:' || e.id)
        ORDER BY e.created_at DESC, e.id DESC
        LIMIT 1
    ) AS e
    """
)

# -- name: end_waits -- waits that completed (or failed): they wait no more.
END_WAITS = text("DELETE FROM event_waits WHERE task_id = ANY(CAST(:ids AS bigint[]))")

# -- name: fail_waits -- waits that timed out without on_timeout: failed, with the error.
FAIL_WAITS = text(
    """
    WITH moved AS (
        UPDATE tasks t SET status = 'failed', error = u.error, finished_at = CAST(:now AS timestamptz),
                           completed_by = :actor
        FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[])) AS u(id, error)
        WHERE t.id = u.id AND t.status = 'pending'
        RETURNING t.id, t.run_id, t.status, t.error
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'pending', 'failed', :actor, error, CAST(:now AS timestamptz) FROM moved
    )
    SELECT id, run_id, status, error FROM moved
    """
)

# -- name: due_waits -- waits whose deadline has passed (their keys, to lock before acting).
DUE_WAITS = text(
    """
    SELECT task_id, event, key FROM event_waits
    WHERE deadline IS NOT NULL AND deadline <= CAST(:now AS timestamptz)
    ORDER BY deadline LIMIT :limit
    """
)

# -- name: lock_due_waits -- waits still past their deadline, with their run's status (keys held).
LOCK_DUE_WAITS = text(
    """
    SELECT w.event, w.key, r.status AS run_status, t.*
    FROM event_waits w JOIN tasks t ON t.id = w.task_id JOIN runs r ON r.id = t.run_id
    WHERE w.task_id = ANY(CAST(:ids AS bigint[])) AND w.deadline <= CAST(:now AS timestamptz)
    ORDER BY t.id
    """
)

# -- name: next_timer -- when the next timed task or wait deadline falls due after now (a worker's
# -- wake-up): one look at the start of each index.
NEXT_TIMER = text(
    """
    SELECT least(
        (SELECT min(available_at) FROM tasks
         WHERE status = 'pending' AND kind = 'script' AND available_at > CAST(:now AS timestamptz)),
        (SELECT min(deadline) FROM event_waits WHERE deadline IS NOT NULL)
    ) AS due
    """
)

# -- name: finished_children_waits -- wait_for_children stages whose run has no child left open.
FINISHED_CHILDREN_WAITS = text(
    """
    SELECT w.task_id, w.event, w.key FROM event_waits w
    WHERE w.event = :event
      AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.parent_run_id = w.run_id
                      AND c.status IN ('running', 'waiting'))
    ORDER BY w.task_id LIMIT :limit
    """
)

# -- name: lock_waits -- open waits by task id, with their run's status (their keys are held).
LOCK_WAITS = text(
    """
    SELECT w.event, w.key, r.status AS run_status, t.*
    FROM event_waits w JOIN tasks t ON t.id = w.task_id JOIN runs r ON r.id = t.run_id
    WHERE w.task_id = ANY(CAST(:ids AS bigint[]))
    ORDER BY t.id
    """
)

# -- name: open_children -- whether a run has children still running or waiting.
OPEN_CHILDREN = text(
    """
    SELECT EXISTS (SELECT 1 FROM runs WHERE parent_run_id = CAST(:id AS uuid)
                   AND status IN ('running', 'waiting'))
    """
)

# -- name: children_of -- a run's children, oldest first (reports; a wait_for_children's payload).
CHILDREN_OF = text(
    """
    SELECT id, workflow, status, error, context, created_at, finished_at FROM runs
    WHERE parent_run_id = CAST(:id AS uuid) ORDER BY created_at, id LIMIT :limit
    """
)

# -- name: children_counts -- a run's children counted by status.
CHILDREN_COUNTS = text(
    """
    SELECT status, count(*) AS n FROM runs WHERE parent_run_id = CAST(:id AS uuid)
    GROUP BY status ORDER BY status
    """
)
