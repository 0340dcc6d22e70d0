"""Every statement the engine sends to Postgres, by name.

Reading this file tells you everything flowbot asks of the database. Times are parameters
(``CAST(:now AS timestamptz)``) rather than ``now()`` so that leases and backoff follow the engine's injectable clock.
Batched statements take parallel arrays and ``unnest`` them: one round trip for many tasks.
"""

from __future__ import annotations

from sqlalchemy import text

# -- name: ping -- the database answers.
PING = text("SELECT 1")

# -- name: schema_version -- the Alembic revision(s) the database is at.
SCHEMA_VERSION = text("SELECT version_num FROM alembic_version")

# -- name: notify -- wake listening workers when the transaction commits.
NOTIFY = text("SELECT pg_notify(:channel, '')")

# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------

# -- name: insert_runs -- create many runs at once; returns their ids in input order.
INSERT_RUNS = text(
    """
    INSERT INTO runs (workflow, trigger, context, status, created_at, updated_at)
    SELECT w, t, c, 'running', CAST(:now AS timestamptz), CAST(:now AS timestamptz)
    FROM unnest(CAST(:workflows AS text[]), CAST(CAST(:triggers AS text[]) AS jsonb[]), CAST(CAST(:contexts AS text[]) AS jsonb[]))
         WITH ORDINALITY AS x(w, t, c, ord)
    ORDER BY ord
    RETURNING id
    """
)

# -- name: lock_runs -- serialise changes to the same runs (run status is derived from tasks).
LOCK_RUNS = text(
    "SELECT id FROM runs WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR UPDATE"
)

# -- name: patch_run_contexts -- merge stages' changes into runs' shared context (one row per run).
PATCH_RUN_CONTEXTS = text(
    """
    UPDATE runs r
    SET context = (r.context - ARRAY(SELECT jsonb_array_elements_text(u.deleted))) || u.patch,
        updated_at = CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(CAST(:patches AS text[]) AS jsonb[]), CAST(CAST(:deleted AS text[]) AS jsonb[]))
         AS u(id, patch, deleted)
    WHERE r.id = u.id
    """
)

# -- name: append_unrouted -- record sends that no transition took, visibly, on the run.
APPEND_UNROUTED = text(
    """
    UPDATE runs r SET unrouted = r.unrouted || u.items, updated_at = CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(CAST(:items AS text[]) AS jsonb[])) AS u(id, items)
    WHERE r.id = u.id
    """
)

# -- name: refresh_run_status -- derive running / waiting / completed from the run's tasks.
REFRESH_RUN_STATUS = text(
    """
    UPDATE runs r
    SET status = s.new_status,
        updated_at = CAST(:now AS timestamptz),
        finished_at = CASE WHEN s.new_status = 'completed' THEN CAST(:now AS timestamptz) ELSE NULL END
    FROM (
        SELECT r2.id,
               CASE
                 WHEN EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r2.id
                              AND t.status IN ('pending', 'locked') AND t.kind <> 'form')
                   THEN 'running'
                 WHEN EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r2.id
                              AND t.status IN ('pending', 'locked'))
                   THEN 'waiting'
                 ELSE 'completed'
               END AS new_status
        FROM runs r2
        WHERE r2.id = ANY(CAST(:ids AS uuid[])) AND r2.status IN ('running', 'waiting')
    ) s
    WHERE r.id = s.id AND r.status <> s.new_status
    RETURNING r.id, r.workflow, r.status
    """
)

# -- name: fail_runs -- a task failed for good: its run fails with the error.
FAIL_RUNS = text(
    """
    UPDATE runs r SET status = 'failed', error = u.error, updated_at = CAST(:now AS timestamptz), finished_at = CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:errors AS text[])) AS u(id, error)
    WHERE r.id = u.id AND r.status IN ('running', 'waiting')
    """
)

# -- name: cancel_run -- cancel a run and every task of it still open.
CANCEL_RUN = text(
    """
    WITH r AS (
        UPDATE runs SET status = 'cancelled', updated_at = CAST(:now AS timestamptz), finished_at = CAST(:now AS timestamptz)
        WHERE id = :id AND status IN ('running', 'waiting') RETURNING id
    ), t AS (
        UPDATE tasks SET status = 'cancelled', locked_by = NULL, locked_until = NULL,
                         finished_at = CAST(:now AS timestamptz)
        WHERE run_id IN (SELECT id FROM r) AND status IN ('pending', 'locked')
        RETURNING id
    ), e AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, NULL, 'cancelled', :actor, 'run cancelled', CAST(:now AS timestamptz) FROM t
    )
    SELECT count(*) AS n FROM r
    """
)

# -- name: get_run -- one run.
GET_RUN = text("SELECT * FROM runs WHERE id = :id")

# -- name: list_runs -- runs, newest first, optionally filtered.
LIST_RUNS = text(
    """
    SELECT id, workflow, status, trigger, error, created_at, updated_at, finished_at
    FROM runs
    WHERE (CAST(:workflow AS text) IS NULL OR workflow = :workflow)
      AND (CAST(:status AS text) IS NULL OR status = :status)
    ORDER BY created_at DESC, id
    LIMIT :limit
    """
)

# -- name: run_steps -- the tasks of a run in the order they were created (the report's steps).
RUN_STEPS = text(
    """
    SELECT id AS task_id, stage, kind, type, status, attempts, max_attempts, payload,
           started_at, finished_at, created_at, error, log, assignee, completed_by
    FROM tasks WHERE run_id = :id ORDER BY id
    """
)

# -- name: pending_joins -- join stages of a run still waiting for sibling transitions.
PENDING_JOINS = text(
    "SELECT stage, source_stage, type FROM join_arrivals WHERE run_id = :id ORDER BY created_at"
)

# ---------------------------------------------------------------------------------------------
# Tasks: creation
# ---------------------------------------------------------------------------------------------

# -- name: insert_tasks -- create many tasks in one statement (with their 'created' events).
INSERT_TASKS = text(
    """
    WITH new AS (
        INSERT INTO tasks (run_id, workflow, stage, kind, type, payload, status, max_attempts,
                           lease_seconds, source_task_id, assignee, available_at, created_at)
        SELECT run_id, workflow, stage, kind, type, payload, 'pending', max_attempts,
               lease_seconds, source_task_id, assignee, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
        FROM unnest(CAST(:run_ids AS uuid[]), CAST(:workflows AS text[]), CAST(:stages AS text[]),
                    CAST(:kinds AS text[]), CAST(:types AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]),
                    CAST(:max_attempts AS int[]), CAST(:leases AS int[]),
                    CAST(:sources AS bigint[]), CAST(CAST(:assignees AS text[]) AS jsonb[]))
             AS x(run_id, workflow, stage, kind, type, payload, max_attempts, lease_seconds,
                  source_task_id, assignee)
        RETURNING id, run_id, workflow, stage, kind, type
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, NULL, 'pending', :actor, 'created', CAST(:now AS timestamptz) FROM new
    )
    SELECT * FROM new ORDER BY id
    """
)

# -- name: add_join_arrival -- a task reached a join stage; kept until every sibling arrives.
ADD_JOIN_ARRIVAL = text(
    """
    INSERT INTO join_arrivals (run_id, stage, source_stage, type, payload, source_task_id,
                               created_at)
    VALUES (:run_id, :stage, :source_stage, :type, :payload, :source_task_id, CAST(:now AS timestamptz))
    ON CONFLICT (run_id, stage, source_stage) DO NOTHING
    """
)

# -- name: join_arrivals -- what a join stage of a run has received so far.
JOIN_ARRIVALS = text(
    """
    SELECT source_stage, type, payload, source_task_id FROM join_arrivals
    WHERE run_id = :run_id AND stage = :stage ORDER BY created_at
    """
)

# -- name: clear_join -- the join fired: its arrivals are consumed.
CLEAR_JOIN = text("DELETE FROM join_arrivals WHERE run_id = :run_id AND stage = :stage")

# ---------------------------------------------------------------------------------------------
# Tasks: the lifecycle (the hot path)
# ---------------------------------------------------------------------------------------------

# -- name: claim_tasks -- lock up to :limit due script tasks for one worker (SKIP LOCKED).
CLAIM_TASKS = text(
    """
    WITH due AS (
        SELECT id FROM tasks
        WHERE status = 'pending' AND kind = 'script' AND available_at <= CAST(:now AS timestamptz)
          AND (CAST(:workflows AS text[]) IS NULL OR workflow = ANY(CAST(:workflows AS text[])))
        ORDER BY available_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE tasks t
        SET status = 'locked', locked_by = :worker, attempts = t.attempts + 1,
            locked_until = CAST(:now AS timestamptz) + make_interval(secs => t.lease_seconds),
            started_at = CAST(:now AS timestamptz)
        FROM due WHERE t.id = due.id
        RETURNING t.id, t.run_id, t.workflow, t.stage, t.type, t.payload, t.attempts,
                  t.max_attempts, t.lease_seconds
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'pending', 'locked', :worker, 'claimed', CAST(:now AS timestamptz) FROM claimed
    )
    SELECT claimed.*, r.context AS run_context FROM claimed JOIN runs r ON r.id = claimed.run_id
    """
)

# -- name: complete_tasks -- mark locked tasks completed, only if this worker still holds them.
COMPLETE_TASKS = text(
    """
    WITH done AS (
        UPDATE tasks t
        SET status = 'completed', locked_by = NULL, locked_until = NULL, finished_at = CAST(:now AS timestamptz),
            log = t.log || u.log, completed_by = :actor
        FROM unnest(CAST(:ids AS bigint[]), CAST(CAST(:logs AS text[]) AS jsonb[])) AS u(id, log)
        WHERE t.id = u.id AND t.status = :from_status
          AND (CAST(:worker AS text) IS NULL OR t.locked_by = :worker)
        RETURNING t.id, t.run_id
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, :from_status, 'completed', :actor, NULL, CAST(:now AS timestamptz) FROM done
    )
    SELECT id, run_id FROM done
    """
)

# -- name: retry_or_fail_tasks -- a stage raised: back to pending after a backoff, or failed
# -- when its attempts are spent.
RETRY_OR_FAIL_TASKS = text(
    """
    WITH u AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[]),
                             CAST(CAST(:logs AS text[]) AS jsonb[]), CAST(:delays AS float8[]))
               AS u(id, error, log, delay)
    ), moved AS (
        UPDATE tasks t
        SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
            locked_by = NULL, locked_until = NULL, error = u.error, log = t.log || u.log,
            available_at = CAST(:now AS timestamptz) + make_interval(secs => u.delay),
            finished_at = CASE WHEN t.attempts >= t.max_attempts THEN CAST(:now AS timestamptz) ELSE NULL END
        FROM u
        WHERE t.id = u.id AND t.status = 'locked' AND t.locked_by = :worker
        RETURNING t.id, t.run_id, t.status, t.error
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'locked', status, :worker, error, CAST(:now AS timestamptz) FROM moved
    )
    SELECT id, run_id, status, error FROM moved
    """
)

# -- name: heartbeat -- extend the leases of the tasks a worker is still running.
HEARTBEAT = text(
    """
    UPDATE tasks SET locked_until = CAST(:now AS timestamptz) + make_interval(secs => lease_seconds)
    WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'locked' AND locked_by = :worker
    RETURNING id
    """
)

# -- name: expired_lease_runs -- runs that have tasks whose lease ran out.
EXPIRED_LEASE_RUNS = text(
    """
    SELECT DISTINCT run_id FROM tasks
    WHERE status = 'locked' AND locked_until < CAST(:now AS timestamptz)
    LIMIT :limit
    """
)

# -- name: reap_expired -- a lease ran out (worker died or hung): back to pending, the attempt
# -- counts; tasks out of attempts fail.
REAP_EXPIRED = text(
    """
    WITH moved AS (
        UPDATE tasks t
        SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
            error = 'lease expired (worker ' || COALESCE(t.locked_by, '?') || ' stopped answering)',
            locked_by = NULL, locked_until = NULL, available_at = CAST(:now AS timestamptz),
            finished_at = CASE WHEN t.attempts >= t.max_attempts THEN CAST(:now AS timestamptz) ELSE NULL END
        WHERE t.run_id = ANY(CAST(:run_ids AS uuid[])) AND t.status = 'locked'
          AND t.locked_until < CAST(:now AS timestamptz)
        RETURNING t.id, t.run_id, t.status, t.error
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'locked', status, :actor, 'lease expired', CAST(:now AS timestamptz) FROM moved
    )
    SELECT id, run_id, status, error FROM moved
    """
)

# -- name: release_tasks -- a worker shuts down: give its unfinished tasks back (not a failure).
RELEASE_TASKS = text(
    """
    WITH moved AS (
        UPDATE tasks t
        SET status = 'pending', locked_by = NULL, locked_until = NULL,
            attempts = GREATEST(t.attempts - 1, 0), available_at = CAST(:now AS timestamptz)
        WHERE t.id = ANY(CAST(:ids AS bigint[])) AND t.status = 'locked' AND t.locked_by = :worker
        RETURNING t.id
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'locked', 'pending', :worker, 'released on shutdown', CAST(:now AS timestamptz) FROM moved
    )
    SELECT id FROM moved
    """
)

# -- name: lock_task -- lock one task row for a person's action (form submission, claim).
LOCK_TASK = text("SELECT * FROM tasks WHERE id = :id FOR UPDATE")

# -- name: get_task -- one task.
GET_TASK = text("SELECT * FROM tasks WHERE id = :id")

# -- name: set_task_assignee -- record who a form task is assigned to (claim, reassignment).
SET_TASK_ASSIGNEE = text("UPDATE tasks SET assignee = :assignee WHERE id = :id")

# -- name: list_tasks -- tasks, newest first, optionally filtered.
LIST_TASKS = text(
    """
    SELECT id, run_id, workflow, stage, kind, type, status, attempts, max_attempts, assignee,
           error, created_at, started_at, finished_at
    FROM tasks
    WHERE (CAST(:stage AS text) IS NULL OR stage = :stage)
      AND (CAST(:status AS text) IS NULL OR status = :status)
      AND (CAST(:run AS uuid) IS NULL OR run_id = CAST(:run AS uuid))
      AND (CAST(:workflow AS text) IS NULL OR workflow = :workflow)
    ORDER BY id DESC
    LIMIT :limit
    """
)

# -- name: task_events -- the history of one task.
TASK_EVENTS = text(
    "SELECT from_status, to_status, actor, reason, at FROM task_events WHERE task_id = :id "
    "ORDER BY id"
)

# -- name: count_tasks_by_status -- how many tasks are in each status (CLI, tests, benchmarks).
COUNT_TASKS_BY_STATUS = text("SELECT status, count(*) AS n FROM tasks GROUP BY status")

# ---------------------------------------------------------------------------------------------
# Outbox: side effects delivered after commit
# ---------------------------------------------------------------------------------------------

# -- name: insert_outbox -- effects written in the transaction that produced them.
INSERT_OUTBOX = text(
    """
    INSERT INTO outbox (kind, payload, task_id, run_id, available_at, created_at)
    SELECT k, p, t, r, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
    FROM unnest(CAST(:kinds AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]), CAST(:task_ids AS bigint[]),
                CAST(:run_ids AS uuid[])) AS x(k, p, t, r)
    """
)

# -- name: claim_outbox -- take deliverable effects; a short lease guards against two senders.
CLAIM_OUTBOX = text(
    """
    WITH due AS (
        SELECT id FROM outbox
        WHERE status = 'pending' AND available_at <= CAST(:now AS timestamptz)
          AND (locked_until IS NULL OR locked_until < CAST(:now AS timestamptz))
          AND kind = ANY(CAST(:kinds AS text[]))
        ORDER BY available_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox o SET locked_until = CAST(:now AS timestamptz) + make_interval(secs => :lease),
                        attempts = o.attempts + 1
    FROM due WHERE o.id = due.id
    RETURNING o.id, o.kind, o.payload, o.task_id, o.run_id, o.attempts
    """
)

# -- name: outbox_delivered -- an effect was delivered (kept, with the API's answer).
OUTBOX_DELIVERED = text(
    """
    UPDATE outbox SET status = 'delivered', delivered_at = CAST(:now AS timestamptz), locked_until = NULL,
                      result = :result, error = NULL
    WHERE id = :id
    """
)

# -- name: outbox_retry -- delivery failed for now (429, network): try again later.
OUTBOX_RETRY = text(
    """
    UPDATE outbox SET available_at = CAST(:now AS timestamptz) + make_interval(secs => :delay), locked_until = NULL,
                      error = :error
    WHERE id = :id
    """
)

# -- name: outbox_failed -- delivery failed for good; the error is kept on the effect.
OUTBOX_FAILED = text(
    """
    UPDATE outbox SET status = 'failed', locked_until = NULL, error = :error, delivered_at = CAST(:now AS timestamptz)
    WHERE id = :id
    """
)

# -- name: append_task_log -- add lines to a task's log (e.g. a delivery error of its effects).
APPEND_TASK_LOG = text("UPDATE tasks SET log = log || :lines WHERE id = :id")
