"""Every statement of operations, by name: the audit trail, API tokens, cancel / retry / rerun
of runs and tasks, and the outbox as operators see it (``engine.ops``).

Kept beside ``engine.store.queries`` (the engine's hot path) so that file stays one screen per
concern; the same conventions hold (times are parameters, batches are arrays).
"""

from __future__ import annotations

from sqlalchemy import text

# ---------------------------------------------------------------------------------------------
# The audit trail (append-only)
# ---------------------------------------------------------------------------------------------

# -- name: insert_audit -- record actions of people (one row each, in the action's transaction).
INSERT_AUDIT = text(
    """
    INSERT INTO audit (at, actor, acting_as, on_behalf_of, edge, action, workflow, run_id, task_id, detail)
    SELECT CAST(:now AS timestamptz), a, s, b, e, x, w, r, t, d
    FROM unnest(CAST(:actors AS text[]), CAST(:acting_as AS text[]), CAST(:on_behalf_of AS text[]),
                CAST(:edges AS text[]), CAST(:actions AS text[]), CAST(:workflows AS text[]),
                CAST(:run_ids AS uuid[]), CAST(:task_ids AS bigint[]), CAST(CAST(:details AS text[]) AS jsonb[]))
         WITH ORDINALITY AS u(a, s, b, e, x, w, r, t, d, ord)
    ORDER BY ord
    """
)

# -- name: list_audit -- the trail, newest first, optionally of one run, one actor, since a time.
LIST_AUDIT = text(
    """
    SELECT id, at, actor, acting_as, on_behalf_of, edge, action, workflow, run_id, task_id, detail
    FROM audit
    WHERE (CAST(:run AS uuid) IS NULL OR run_id = CAST(:run AS uuid))
      AND (CAST(:actor AS text) IS NULL OR actor = ANY(CAST(:actors AS text[])))
      AND (CAST(:since AS timestamptz) IS NULL OR at >= CAST(:since AS timestamptz))
    ORDER BY at DESC, id DESC
    LIMIT :limit
    """
)

# -- name: run_audit -- what people did to one run, oldest first (its report shows it).
RUN_AUDIT = text(
    """
    SELECT at, actor, acting_as, on_behalf_of, edge, action, task_id, detail
    FROM audit WHERE run_id = :id ORDER BY at, id
    """
)

# ---------------------------------------------------------------------------------------------
# API tokens of people
# ---------------------------------------------------------------------------------------------

# -- name: insert_api_token -- a new token (only its hash is kept).
INSERT_API_TOKEN = text(
    """
    INSERT INTO api_tokens (person, role, token_hash, prefix, created_by, created_at, expires_at)
    VALUES (:person, :role, :hash, :prefix, :created_by, CAST(:now AS timestamptz), CAST(:expires AS timestamptz))
    RETURNING id, person, role, prefix, created_at, expires_at
    """
)

# -- name: api_token_by_hash -- the live token a bearer presents (not revoked, not expired).
API_TOKEN_BY_HASH = text(
    """
    SELECT id, person, role FROM api_tokens
    WHERE token_hash = :hash AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > CAST(:now AS timestamptz))
    """
)

# -- name: list_api_tokens -- every token (never the token itself).
LIST_API_TOKENS = text(
    """
    SELECT id, person, role, prefix, created_by, created_at, expires_at, revoked_at
    FROM api_tokens ORDER BY id
    """
)

# -- name: revoke_api_token -- a token stops working (kept, for the record).
REVOKE_API_TOKEN = text(
    """
    UPDATE api_tokens SET revoked_at = CAST(:now AS timestamptz)
    WHERE id = :id AND revoked_at IS NULL
    RETURNING id, person, role, prefix
    """
)

# -- name: get_api_token -- one token by id.
GET_API_TOKEN = text("SELECT id, person, role, prefix, revoked_at FROM api_tokens WHERE id = :id")

# ---------------------------------------------------------------------------------------------
# Runs: cancel, retry, rerun
# ---------------------------------------------------------------------------------------------

# -- name: lock_run -- one run, locked for an operation (completions lock it too: they serialise).
LOCK_RUN = text("SELECT * FROM runs WHERE id = :id FOR UPDATE")

#: The run :id and every run it started, and they started, down the tree (ctx.start).
_RUN_TREE = """
    WITH RECURSIVE tree AS (
        SELECT CAST(:id AS uuid) AS id
        UNION
        SELECT c.id FROM runs c JOIN tree ON c.parent_run_id = tree.id
    )"""

# -- name: lock_run_tree -- lock a run and every run it started (in id order, as completions lock runs).
LOCK_RUN_TREE = text(
    _RUN_TREE + """
    SELECT r.id, r.status FROM runs r WHERE r.id IN (SELECT id FROM tree) ORDER BY r.id FOR UPDATE
    """
)

# -- name: open_form_tasks -- the form tasks still waiting on a person of a run and the runs it started.
OPEN_FORM_TASKS = text(
    _RUN_TREE + """
    SELECT t.id, t.run_id, t.assignee FROM tasks t
    WHERE t.run_id IN (SELECT id FROM tree) AND t.kind = 'form' AND t.status IN ('pending', 'locked')
    """
)

# -- name: cancel_run_tasks -- a run cancelled by a person, with the open runs it started (down the
# -- tree): their open tasks (timed ones too) are cancelled, saying by whom and why; their waiting
# -- joins and waits are dropped.
CANCEL_RUN_TASKS = text(
    _RUN_TREE + """, r AS (
        UPDATE runs SET status = 'cancelled',
                        error = CASE WHEN id = CAST(:id AS uuid) THEN :reason ELSE :child_reason END,
                        updated_at = CAST(:now AS timestamptz), finished_at = CAST(:now AS timestamptz)
        WHERE id IN (SELECT id FROM tree) AND status IN ('running', 'waiting') RETURNING id, workflow
    ), t AS (
        UPDATE tasks SET status = 'cancelled', locked_by = NULL, locked_until = NULL,
                         finished_at = CAST(:now AS timestamptz), completed_by = :actor
        WHERE run_id IN (SELECT id FROM r) AND status IN ('pending', 'locked')
        RETURNING id, run_id
    ), e AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, NULL, 'cancelled', :actor,
               CASE WHEN run_id = CAST(:id AS uuid) THEN :reason ELSE :child_reason END, CAST(:now AS timestamptz)
        FROM t
    ), j AS (
        DELETE FROM join_arrivals WHERE run_id IN (SELECT id FROM r)
    ), w AS (
        -- Its waits stop waiting (their deadlines with them).
        DELETE FROM event_waits WHERE run_id IN (SELECT id FROM r)
    )
    SELECT (SELECT count(*) FROM t) AS tasks,
           (SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'workflow', workflow)), '[]')
            FROM r WHERE id <> CAST(:id AS uuid)) AS children
    """
)

# -- name: retry_tasks -- failed tasks run again from their step with fresh attempts (their
# -- earlier attempts stay counted and in their history).
RETRY_TASKS = text(
    """
    WITH u AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:fresh AS int[])) AS u(id, fresh)
    ), moved AS (
        UPDATE tasks t
        SET status = 'pending', max_attempts = t.attempts + u.fresh, error = NULL,
            available_at = CAST(:now AS timestamptz), finished_at = NULL, locked_by = NULL, locked_until = NULL
        FROM u WHERE t.id = u.id AND t.status = 'failed'
        RETURNING t.id, t.run_id
    ), ev AS (
        INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
        SELECT id, 'failed', 'pending', :actor, 'retried', CAST(:now AS timestamptz) FROM moved
    )
    SELECT id, run_id FROM moved
    """
)

# -- name: failed_tasks_of_run -- the failed tasks of a run (what retrying it runs again).
FAILED_TASKS_OF_RUN = text(
    "SELECT id, workflow, stage FROM tasks WHERE run_id = :id AND status = 'failed' ORDER BY id"
)

# -- name: reopen_run -- a failed run is running again (a task of it was retried).
REOPEN_RUN = text(
    """
    UPDATE runs SET status = 'running', error = NULL, finished_at = NULL, updated_at = CAST(:now AS timestamptz)
    WHERE id = :id AND status IN ('failed', 'running', 'waiting')
    """
)

# -- name: first_task_of_run -- where a run began (what a rerun starts again).
FIRST_TASK_OF_RUN = text("SELECT * FROM tasks WHERE run_id = :id ORDER BY id LIMIT 1")

# -- name: set_rerun_of -- link a rerun to the run it reran.
SET_RERUN_OF = text("UPDATE runs SET rerun_of = :of WHERE id = :id")

# -- name: reruns_of -- the reruns of a run, oldest first.
RERUNS_OF = text("SELECT id FROM runs WHERE rerun_of = :id ORDER BY created_at, id")

# -- name: run_ids_by_prefix -- runs whose id starts with what a person typed (at most two: a
# -- unique prefix names a run).
RUN_IDS_BY_PREFIX = text(
    """
    SELECT id FROM runs
    WHERE id >= CAST(:low AS uuid) AND id <= CAST(:high AS uuid)
    ORDER BY id LIMIT 2
    """
)

# -- name: list_runs_visible -- runs a member may see: of workflows they operate or view, or
# -- started by them (newest first).
LIST_RUNS_VISIBLE = text(
    """
    SELECT id, workflow, status, trigger, error, created_at, updated_at, finished_at, rerun_of, test
    FROM runs
    WHERE (CAST(:workflow AS text) IS NULL OR workflow = :workflow)
      AND (CAST(:status AS text) IS NULL OR status = :status)
      AND (CAST(:all AS boolean) OR workflow = ANY(CAST(:workflows AS text[]))
           OR trigger ->> 'user' = ANY(CAST(:people AS text[])))
    ORDER BY created_at DESC, id
    LIMIT :limit
    """
)

# ---------------------------------------------------------------------------------------------
# Identities: a Slack user is the same person as their email
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# The outbox as operators see it
# ---------------------------------------------------------------------------------------------

# -- name: list_outbox -- effects waiting or failed (or of one status), oldest first.
LIST_OUTBOX = text(
    """
    SELECT id, kind, payload, task_id, run_id, status, attempts, available_at, error, created_at
    FROM outbox
    WHERE status IN ('pending', 'failed') AND (CAST(:status AS text) IS NULL OR status = :status)
    ORDER BY created_at, id
    LIMIT :limit
    """
)

# -- name: lock_outbox -- one effect, locked for an operator's retry or discard.
LOCK_OUTBOX = text("SELECT id, kind, status, task_id, run_id, attempts, error FROM outbox WHERE id = :id FOR UPDATE")

# -- name: retry_outbox -- a failed effect is delivered again (fresh attempts).
RETRY_OUTBOX = text(
    """
    UPDATE outbox SET status = 'pending', attempts = 0, available_at = CAST(:now AS timestamptz),
                      locked_until = NULL, delivered_at = NULL
    WHERE id = :id
    """
)

# -- name: discard_outbox -- an effect is given up on (never delivered; kept, for the record).
DISCARD_OUTBOX = text(
    """
    UPDATE outbox SET status = 'discarded', locked_until = NULL, delivered_at = CAST(:now AS timestamptz)
    WHERE id = :id
    """
)
