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
    INSERT INTO runs (workflow, workflow_version, trigger, context, status, created_at, updated_at)
    SELECT w, v, t, c, 'running', CAST(:now AS timestamptz), CAST(:now AS timestamptz)
    FROM unnest(CAST(:workflows AS text[]), CAST(:versions AS text[]), CAST(CAST(:triggers AS text[]) AS jsonb[]),
                CAST(CAST(:contexts AS text[]) AS jsonb[]))
         WITH ORDINALITY AS x(w, v, t, c, ord)
    ORDER BY ord
    RETURNING id
    """
)

# -- name: mark_test_runs -- these runs are test runs (`flowbot trigger --test`, a test run's children).
MARK_TEST_RUNS = text("UPDATE runs SET test = true WHERE id = ANY(CAST(:ids AS uuid[])) AND NOT test")

# -- name: test_runs_among -- which of these runs are test runs.
TEST_RUNS_AMONG = text("SELECT id FROM runs WHERE id = ANY(CAST(:ids AS uuid[])) AND test")

# -- name: lock_runs -- serialise changes to the same runs (run status is derived from tasks).
LOCK_RUNS = text(
    "SELECT id, status FROM runs WHERE id = ANY(CAST(:ids AS uuid[])) ORDER BY id FOR UPDATE"
)

# -- name: patch_run_contexts -- merge stages' changes into runs' shared context (one row per run).
PATCH_RUN_CONTEXTS = text(
    """
    UPDATE runs r
    SET context = (r.context - ARRAY(SELECT jsonb_array_elements_text(u.deleted))) || u.patch,
        updated_at = CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(CAST(:patches AS text[]) AS jsonb[]),
                CAST(CAST(:deleted AS text[]) AS jsonb[]))
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

# -- name: refresh_run_status -- derive running / waiting / completed from the run's tasks (the
# -- changed runs come back with their parents: a finished child may let its parent go on).
REFRESH_RUN_STATUS = text(
    """
    UPDATE runs r
    SET status = s.new_status,
        updated_at = CAST(:now AS timestamptz),
        finished_at = CASE WHEN s.new_status = 'completed' THEN CAST(:now AS timestamptz) ELSE NULL END
    FROM (
        -- A lateral aggregate per run: always an index lookup on tasks.run_id for each run named,
        -- never a hash over every open task of the table (what EXISTS subplans may turn into).
        SELECT r2.id,
               CASE o.least WHEN 0 THEN 'running' WHEN 1 THEN 'waiting' ELSE 'completed' END AS new_status
        FROM runs r2
        CROSS JOIN LATERAL (
            -- Forms wait on people, waits on events and timed tasks on the clock: the run is waiting
            -- when nothing else is open.
            SELECT min(CASE WHEN t.kind IN ('form', 'wait') OR (t.status = 'pending' AND t.attempts = 0
                                 AND t.available_at > CAST(:now AS timestamptz)) THEN 1 ELSE 0 END) AS least
            FROM tasks t WHERE t.run_id = r2.id AND t.status IN ('pending', 'locked')
        ) o
        WHERE r2.id = ANY(CAST(:ids AS uuid[])) AND r2.status IN ('running', 'waiting')
    ) s
    WHERE r.id = s.id AND r.status <> s.new_status
    RETURNING r.id, r.workflow, r.status, r.parent_run_id
    """
)

# -- name: fail_runs -- a task failed for good: its run fails with the error.
FAIL_RUNS = text(
    """
    UPDATE runs r SET status = 'failed', error = u.error,
                      updated_at = CAST(:now AS timestamptz), finished_at = CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS uuid[]), CAST(:errors AS text[])) AS u(id, error)
    WHERE r.id = u.id AND r.status IN ('running', 'waiting')
    RETURNING r.id, r.parent_run_id
    """
)

# -- name: get_run -- one run.
GET_RUN = text("SELECT * FROM runs WHERE id = :id")

# -- name: run_steps -- the tasks of a run in the order they were created (the report's steps), with
# -- what each open wait waits for.
RUN_STEPS = text(
    """
    SELECT t.id AS task_id, t.stage, t.kind, t.type, t.status, t.attempts, t.max_attempts, t.payload,
           t.started_at, t.finished_at, t.created_at, t.available_at, t.error, t.log, t.assignee, t.completed_by,
           t.workflow_version,
           w.event AS wait_event, w.key AS wait_key, w.deadline AS wait_deadline,
           EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = t.id) AS ever_moved
    FROM tasks t LEFT JOIN event_waits w ON w.task_id = t.id
    WHERE t.run_id = :id ORDER BY t.id
    """
)

# -- name: pending_joins -- join stages of a run still waiting for sibling transitions.
PENDING_JOINS = text(
    "SELECT stage, source_stage, type FROM join_arrivals WHERE run_id = :id ORDER BY created_at"
)

# ---------------------------------------------------------------------------------------------
# Tasks: creation
# ---------------------------------------------------------------------------------------------

# -- name: insert_tasks -- create many tasks in one statement (recording who created them; a timed
# -- task is claimable from its due time, NULL: now), with
# -- the assignment of the form tasks queued, and the workers woken (and waiting runs running
# -- again) for the script tasks.
INSERT_TASKS = text(
    """
    WITH created AS (
        INSERT INTO tasks (run_id, workflow, stage, kind, type, payload, status, max_attempts,
                           lease_seconds, source_task_id, assignee, available_at, created_at, created_by)
        SELECT run_id, workflow, stage, kind, type, payload, 'pending', max_attempts,
               lease_seconds, source_task_id, assignee, COALESCE(due, CAST(:now AS timestamptz)),
               CAST(:now AS timestamptz), :actor
        FROM unnest(CAST(:run_ids AS uuid[]), CAST(:workflows AS text[]), CAST(:stages AS text[]),
                        CAST(:kinds AS text[]), CAST(:types AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]),
                        CAST(:max_attempts AS int[]), CAST(:leases AS int[]),
                        CAST(:sources AS bigint[]), CAST(CAST(:assignees AS text[]) AS jsonb[]),
                        CAST(:dues AS timestamptz[]))
                 AS x(run_id, workflow, stage, kind, type, payload, max_attempts, lease_seconds,
                      source_task_id, assignee, due)
        RETURNING id, run_id, workflow, stage, kind, type, payload, available_at
    ), assigned AS (
        -- A new form task is assigned after commit (the assignee resolved, a DM sent): an outbox row.
        INSERT INTO outbox (kind, payload, task_id, run_id, available_at, created_at)
        SELECT 'form.assigned', jsonb_build_object('task_id', id), id, run_id,
               CAST(:now AS timestamptz), CAST(:now AS timestamptz)
        FROM created WHERE kind = 'form' ORDER BY id
    ), busy AS (
        -- A run with a due script task is running: a run waiting on people that got one is
        -- running again (what refresh_run_status would derive, without looking at its tasks).
        UPDATE runs SET status = 'running', updated_at = CAST(:now AS timestamptz)
        WHERE id IN (SELECT run_id FROM created WHERE kind = 'script' AND available_at <= CAST(:now AS timestamptz))
          AND status = 'waiting'
    ), woke AS (
        -- New script tasks wake the listening workers once this transaction commits. (Read by the
        -- join below, so it runs; Postgres sends one notification per transaction and channel.)
        SELECT pg_notify(:channel, '') FROM (SELECT 1 FROM created WHERE kind = 'script' LIMIT 1) AS any_script
    ), told AS (
        -- New form tasks wake the outbox dispatcher: their assignment (the DM) goes out at once.
        SELECT pg_notify(:outbox_channel, '') FROM (SELECT 1 FROM created WHERE kind = 'form' LIMIT 1) AS any_form
    )
    SELECT created.* FROM created LEFT JOIN woke ON true LEFT JOIN told ON true
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

# -- name: complete_tasks -- mark tasks completed (guarded: only from :from_status, and only if
# -- this worker still holds them), with what the completions carry, for the completed ones only:
# -- their effects for the outbox (in the order given) and the form sessions they close.
COMPLETE_TASKS = text(
    """
    WITH done AS (
        UPDATE tasks t
        SET status = 'completed', locked_by = NULL, locked_until = NULL, finished_at = CAST(:now AS timestamptz),
            log = t.log || u.log, completed_by = u.actor, workflow_version = u.version
        FROM unnest(CAST(:ids AS bigint[]), CAST(CAST(:logs AS text[]) AS jsonb[]), CAST(:actors AS text[]),
                    CAST(:versions AS text[]))
             AS u(id, log, actor, version)
        WHERE t.id = u.id AND t.status = :from_status
          AND (CAST(:worker AS text) IS NULL OR t.locked_by = :worker)
        RETURNING t.id, t.run_id, u.actor
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, :from_status, 'completed', actor, NULL, CAST(:now AS timestamptz) FROM done
    ), effects AS (
        INSERT INTO outbox (kind, payload, task_id, run_id, available_at, created_at)
        SELECT e.kind, e.payload, done.id, done.run_id, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
        FROM unnest(CAST(:effect_task_ids AS bigint[]), CAST(:effect_kinds AS text[]),
                    CAST(CAST(:effect_payloads AS text[]) AS jsonb[])) WITH ORDINALITY AS e(task_id, kind, payload, ord)
        JOIN done ON done.id = e.task_id
        ORDER BY e.ord
        RETURNING 1
    ), closed AS (
        DELETE FROM form_sessions s
        USING unnest(CAST(:session_task_ids AS bigint[]), CAST(:session_ids AS uuid[])) AS x(task_id, id)
        WHERE s.id = x.id AND x.task_id IN (SELECT id FROM done)
    ), told AS (
        -- Effects wake the outbox dispatcher once this transaction commits (the requester's DM).
        SELECT pg_notify(:outbox_channel, '') FROM (SELECT 1 FROM effects LIMIT 1) AS any_effect
    )
    SELECT id, run_id FROM done LEFT JOIN told ON true
    """
)

# -- name: retry_or_fail_tasks -- a stage raised: back to pending after a backoff, or failed
# -- when its attempts are spent.
RETRY_OR_FAIL_TASKS = text(
    """
    WITH u AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:errors AS text[]),
                             CAST(CAST(:logs AS text[]) AS jsonb[]), CAST(:delays AS float8[]),
                             CAST(:versions AS text[]))
               AS u(id, error, log, delay, version)
    ), moved AS (
        UPDATE tasks t
        SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
            locked_by = NULL, locked_until = NULL, error = u.error, log = t.log || u.log,
            workflow_version = u.version,
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
            attempts = GREATEST(t.attempts - 1, 0),
            available_at = CAST(:now AS timestamptz) + make_interval(secs => :delay)
        WHERE t.id = ANY(CAST(:ids AS bigint[])) AND t.status = 'locked' AND t.locked_by = :worker
        RETURNING t.id
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'locked', 'pending', :worker, :reason, CAST(:now AS timestamptz) FROM moved
    )
    SELECT id FROM moved
    """
)

# -- name: release_unreceived -- tasks a worker's claim locked but whose answer never reached it (the
# -- connection was lost as it committed): pending again, the attempt not counted. Only tasks claimed
# -- at or before :before and not among the ones it holds (:held).
RELEASE_UNRECEIVED = text(
    """
    WITH moved AS (
        UPDATE tasks t
        SET status = 'pending', locked_by = NULL, locked_until = NULL,
            attempts = GREATEST(t.attempts - 1, 0), available_at = CAST(:now AS timestamptz)
        WHERE t.status = 'locked' AND t.locked_by = :worker AND t.started_at <= CAST(:before AS timestamptz)
          AND t.id <> ALL(CAST(:held AS bigint[]))
        RETURNING t.id
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'locked', 'pending', :worker, 'claim answer lost', CAST(:now AS timestamptz) FROM moved
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

# -- name: list_tasks -- tasks, newest first, optionally filtered (a form task's timeout as its
# -- deadline: engine.store.deadlines); a timed task not yet due shows as
# -- "scheduled" (pending, never claimed, claimable from due_at; a retry's or a release's wait is not).
LIST_TASKS = text(
    """
    SELECT * FROM (
        SELECT id, run_id, workflow, stage, kind, type,
               CASE WHEN status = 'pending' AND kind = 'script' AND available_at > CAST(:now AS timestamptz)
                         AND NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = tasks.id)
                    THEN 'scheduled' ELSE status END AS status,
               attempts, max_attempts, assignee, error, created_at, available_at AS due_at, started_at, finished_at,
               (SELECT w.deadline FROM event_waits w
                WHERE w.task_id = tasks.id AND w.event = 'flowbot.form.timeout') AS deadline
        FROM tasks
    ) t
    WHERE (CAST(:stage AS text) IS NULL OR stage = :stage)
      AND (CAST(:status AS text) IS NULL OR status = :status)
      AND (CAST(:run AS uuid) IS NULL OR run_id = CAST(:run AS uuid))
      AND (CAST(:workflow AS text) IS NULL OR workflow = :workflow)
      AND (CAST(:before AS bigint) IS NULL OR id < CAST(:before AS bigint))
    ORDER BY id DESC
    LIMIT :limit
    """
)

# -- name: task_events -- the history of one task: its creation (on the task row), then its log.
TASK_EVENTS = text(
    """
    SELECT from_status, to_status, actor, reason, at FROM (
        SELECT 0 AS n, NULL AS from_status, 'pending' AS to_status, coalesce(created_by, 'engine') AS actor,
               'created' AS reason, created_at AS at
        FROM tasks WHERE id = :id
        UNION ALL
        SELECT id, from_status, to_status, actor, reason, at FROM task_events WHERE task_id = :id
    ) AS h
    ORDER BY n
    """
)

# -- name: count_tasks_by_status -- how many tasks are in each status (CLI, tests, benchmarks).
COUNT_TASKS_BY_STATUS = text("SELECT status, count(*) AS n FROM tasks GROUP BY status")

# ---------------------------------------------------------------------------------------------
# Outbox: side effects delivered after commit
# ---------------------------------------------------------------------------------------------

# -- name: insert_outbox -- effects written in the transaction that produced them (waking the
# -- outbox dispatcher when it commits).
INSERT_OUTBOX = text(
    """
    WITH added AS (
        INSERT INTO outbox (kind, payload, task_id, run_id, available_at, created_at)
        SELECT k, p, t, r, CAST(:now AS timestamptz), CAST(:now AS timestamptz)
        FROM unnest(CAST(:kinds AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]), CAST(:task_ids AS bigint[]),
                    CAST(:run_ids AS uuid[])) AS x(k, p, t, r)
        RETURNING 1
    )
    SELECT pg_notify(:outbox_channel, '') FROM (SELECT 1 FROM added LIMIT 1) AS any_effect
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

# ---------------------------------------------------------------------------------------------
# People and forms
# ---------------------------------------------------------------------------------------------

# -- name: task_completer -- who completed a task (the winner a losing submitter is told about).
TASK_COMPLETER = text("SELECT status, completed_by, finished_at FROM tasks WHERE id = :id")

# -- name: insert_form_session -- a person opened a form (a task's, or a start form).
INSERT_FORM_SESSION = text(
    """
    INSERT INTO form_sessions (task_id, workflow, stage, purpose, user_id, payload, page, answers,
                               created_at, expires_at)
    VALUES (:task_id, :workflow, :stage, :purpose, :user_id, :payload, :page, CAST('{}' AS jsonb),
            CAST(:now AS timestamptz), CAST(:now AS timestamptz) + make_interval(secs => :ttl))
    RETURNING id
    """
)

# -- name: get_form_session -- one unexpired form session.
GET_FORM_SESSION = text(
    "SELECT * FROM form_sessions WHERE id = CAST(:id AS uuid) AND expires_at > CAST(:now AS timestamptz)"
)

# -- name: save_form_session -- the answers so far and the page shown next.
SAVE_FORM_SESSION = text(
    """
    UPDATE form_sessions SET answers = answers || :answers, page = :page,
                             view_id = COALESCE(:view_id, view_id)
    WHERE id = CAST(:id AS uuid)
    """
)

# -- name: delete_expired_form_sessions -- forget abandoned forms.
DELETE_EXPIRED_FORM_SESSIONS = text("DELETE FROM form_sessions WHERE expires_at <= CAST(:now AS timestamptz)")

# -- name: insert_completed_task -- a start form submitted: the run's first task, already done.
INSERT_COMPLETED_TASK = text(
    """
    WITH new AS (
        INSERT INTO tasks (run_id, workflow, stage, kind, type, payload, status, max_attempts,
                           lease_seconds, assignee, completed_by, available_at, created_at,
                           started_at, finished_at, log, workflow_version)
        VALUES (:run_id, :workflow, :stage, 'form', :type, :payload, 'completed', 1, 30,
                :assignee, :actor, CAST(:now AS timestamptz), CAST(:now AS timestamptz),
                CAST(:now AS timestamptz), CAST(:now AS timestamptz), :log, :version)
        RETURNING id, run_id
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, NULL, 'completed', :actor, 'start form submitted', CAST(:now AS timestamptz) FROM new
    )
    SELECT id, run_id FROM new
    """
)

# -- name: pending_form_tasks_for -- form tasks waiting on given assignees (user ids or emails).
PENDING_FORM_TASKS_FOR = text(
    """
    SELECT id, run_id, workflow, stage, type, payload, assignee, created_at FROM tasks
    WHERE status = 'pending' AND kind = 'form'
      AND (assignee -> 'users' ?| CAST(:who AS text[]))
    ORDER BY created_at, id
    LIMIT :limit
    """
)

# -- name: form_tasks_waiting_since -- pending tasks of one form stage created before :before
# -- that have no outbox row of :kind yet (the reminder / escalation not done).
FORM_TASKS_WAITING_SINCE = text(
    """
    SELECT t.id, t.run_id, t.workflow, t.stage, t.payload, t.assignee, t.created_at
    FROM tasks t
    WHERE t.status = 'pending' AND t.kind = 'form' AND t.workflow = :workflow AND t.stage = :stage
      AND t.created_at <= CAST(:before AS timestamptz)
      AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.task_id = t.id AND o.kind = :kind)
    ORDER BY t.created_at, t.id
    LIMIT :limit
    """
)

# -- name: move_deadline -- a form task escalated on timeout: its next deadline (the next step).
MOVE_DEADLINE = text(
    "UPDATE event_waits SET key = :key, deadline = CAST(:deadline AS timestamptz) WHERE task_id = :id"
)

# -- name: task_deadlines -- the open deadlines of form tasks (what a card or a page shows).
TASK_DEADLINES = text(
    """
    SELECT task_id, deadline FROM event_waits
    WHERE task_id = ANY(CAST(:ids AS bigint[])) AND event = :event AND deadline IS NOT NULL
    """
)

# -- name: insert_decision -- one person's decision on an approval that needs several (counted
# -- once per person: a second decision of the same person changes nothing).
INSERT_DECISION = text(
    """
    INSERT INTO task_decisions (task_id, person, decision, comment, decided_at)
    VALUES (:id, :person, :decision, :comment, CAST(:now AS timestamptz))
    ON CONFLICT (task_id, person) DO NOTHING
    RETURNING person
    """
)

# -- name: task_decisions -- the decisions on a task so far, in the order they were made.
TASK_DECISIONS = text(
    """
    SELECT task_id, person, decision, comment, decided_at FROM task_decisions
    WHERE task_id = ANY(CAST(:ids AS bigint[])) ORDER BY decided_at, person
    """
)

# -- name: lock_follow_ups -- one process at a time looks for due reminders and escalations
# -- (released at commit).
LOCK_FOLLOW_UPS = text("SELECT pg_advisory_xact_lock(hashtext('flowbot.reminders'))")

# -- name: add_task_event -- record a change made on behalf of a person (reassignment...).
ADD_TASK_EVENT = text(
    """
    INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
    VALUES (:id, :status, :status, :actor, :reason, CAST(:now AS timestamptz))
    """
)

# --- Slack acks (bot.interactions): one round trip per hot read -------------------------------

# -- name: task_with_run_context -- one task and its run's context (a button's form completion).
TASK_WITH_RUN_CONTEXT = text(
    "SELECT t.*, r.context AS run_context FROM tasks t LEFT JOIN runs r ON r.id = t.run_id WHERE t.id = :id"
)

# -- name: delete_form_sessions -- forms submitted (or abandoned): their sessions, one or a batch.
DELETE_FORM_SESSIONS = text("DELETE FROM form_sessions WHERE id = ANY(CAST(:ids AS uuid[]))")

# -- name: form_submission_contexts -- unexpired form sessions (as JSON), each with its task's columns
# (all NULL for a start form) and the run's context: what modal submissions need, in one read.
FORM_SUBMISSION_CONTEXTS = text(
    """
    SELECT t.*, to_jsonb(s) AS form_session, r.context AS run_context
    FROM form_sessions s
    LEFT JOIN tasks t ON t.id = s.task_id
    LEFT JOIN runs r ON r.id = t.run_id
    WHERE s.id = ANY(CAST(:ids AS uuid[])) AND s.expires_at > CAST(:now AS timestamptz)
    """
)

# ---------------------------------------------------------------------------------------------
# Follow-ups of waiting form tasks (engine.people.followups); effects' progress; short run ids
# ---------------------------------------------------------------------------------------------

# -- name: outbox_note_progress -- remember what a multi-message effect already sent, so a retried
# -- delivery does not send it twice (the final result overwrites it).
OUTBOX_NOTE_PROGRESS = text(
    "UPDATE outbox SET result = COALESCE(result, CAST('{}' AS jsonb)) || :patch WHERE id = :id"
)

# -- name: outbox_result -- what an effect recorded so far.
OUTBOX_RESULT = text("SELECT result FROM outbox WHERE id = :id")

# ---------------------------------------------------------------------------------------------
# Metrics (engine.metrics): read at scrape time, open rows only (partial indexes), never a count
# of finished ones
# ---------------------------------------------------------------------------------------------

# -- name: metrics_tasks -- open tasks and runs, and the oldest due pending task of each kind.
METRICS_TASKS = text(
    """
    SELECT (SELECT count(*) FROM tasks WHERE status = 'pending' AND kind = 'script') AS pending_script,
           (SELECT count(*) FROM tasks WHERE status = 'pending' AND kind = 'form') AS pending_form,
           (SELECT count(*) FROM tasks WHERE status = 'locked') AS locked,
           (SELECT min(available_at) FROM tasks WHERE status = 'pending' AND kind = 'script'
              AND available_at <= CAST(:now AS timestamptz)) AS oldest_script,
           (SELECT min(created_at) FROM tasks WHERE status = 'pending' AND kind = 'form') AS oldest_form,
           (SELECT count(*) FROM runs WHERE status = 'running') AS runs_running,
           (SELECT count(*) FROM runs WHERE status = 'waiting') AS runs_waiting
    """
)

# -- name: metrics_outbox -- effects waiting for delivery by kind, and the oldest due one.
METRICS_OUTBOX = text(
    """
    SELECT kind, count(*) AS n,
           min(available_at) FILTER (WHERE available_at <= CAST(:now AS timestamptz)) AS oldest
    FROM outbox WHERE status = 'pending' GROUP BY kind
    """
)
