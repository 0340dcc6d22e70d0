"""The statements of triggers: runs started by hooks and jobs (fan-out, binary COPY targets), hook
deliveries (the hot path of ``POST /hooks/<path>``) and job fires. Times are parameters, as in
``engine.store.queries``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

# ---------------------------------------------------------------------------------------------
# Triggers: fan-out (runs started by hooks and jobs)
# ---------------------------------------------------------------------------------------------

# Bulk loads (COPY, through ``Tx.copy_rows``): a job fanning out 100,000 sends writes its runs
# and their first script tasks this way, in the job's transaction (engine.fanout builds the
# records; run ids are chosen in Python, task ids come from the column default).


@dataclass(frozen=True)
class CopyTarget:
    """A table and the columns a COPY fills, in record order."""

    table: str
    columns: tuple[str, ...]


COPY_RUNS = CopyTarget("runs", ("id", "workflow", "workflow_version", "trigger", "context", "status", "created_at",
                                "updated_at", "parent_run_id"))
COPY_TASKS = CopyTarget("tasks", ("run_id", "workflow", "stage", "kind", "type", "payload", "status",
                                  "max_attempts", "lease_seconds", "assignee", "available_at", "created_at",
                                  "created_by"))

# -- name: set_run_contexts -- the starting context of runs a job started before it set ctx.run.
SET_RUN_CONTEXTS = text(
    """
    UPDATE runs SET context = CAST(:context AS jsonb), updated_at = CAST(:now AS timestamptz)
    WHERE id = ANY(CAST(:ids AS uuid[]))
    """
)

# -- name: runs_workflows -- which of these runs exist, and their workflow (sends naming a run).
RUNS_WORKFLOWS = text("SELECT id, workflow FROM runs WHERE id = ANY(CAST(:ids AS uuid[]))")

# ---------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------

# -- name: find_hook_delivery -- an earlier delivery with this id (a redelivery replays it).
FIND_HOOK_DELIVERY = text(
    """
    SELECT id, status, response_headers, response_body, run_ids, created_at FROM hook_deliveries
    WHERE hook = :hook AND delivery_id = :delivery_id
    """
)

# -- name: insert_hook_delivery -- record a delivery with its response; a concurrent twin with the
# -- same delivery id waits on the unique index and gets nothing back (it then replays ours).
INSERT_HOOK_DELIVERY = text(
    """
    INSERT INTO hook_deliveries (hook, delivery_id, method, status, response_headers, response_body,
                                 run_ids, unrouted, log, created_at)
    VALUES (:hook, :delivery_id, :method, :status, :headers, :body, :run_ids, :unrouted, :log,
            CAST(:now AS timestamptz))
    ON CONFLICT (hook, delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
    RETURNING id
    """
)

# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------

# -- name: claim_job_fire -- one scheduler wins (job, fire_time); the others get no row. The
# -- winner's transaction stays open while the job runs, so a peer waiting here takes over if
# -- the winner dies before committing.
CLAIM_JOB_FIRE = text(
    """
    INSERT INTO job_fires (job, fire_time, manual, status, owner, started_at)
    VALUES (:job, CAST(:fire_time AS timestamptz), :manual, 'fired', :owner, CAST(:now AS timestamptz))
    ON CONFLICT (job, fire_time) DO NOTHING
    RETURNING id
    """
)

# -- name: finish_job_fire -- the job ran (or raised): what it produced, committed with its runs.
FINISH_JOB_FIRE = text(
    """
    UPDATE job_fires SET status = :status, error = :error, finished_at = CAST(:now AS timestamptz),
                         runs_created = :runs_created, log = :log, unrouted = :unrouted
    WHERE id = :id
    """
)

# -- name: skip_job_fire -- a missed fire outside its grace period: recorded, not run.
SKIP_JOB_FIRE = text(
    """
    INSERT INTO job_fires (job, fire_time, status, reason, owner, started_at, finished_at)
    VALUES (:job, CAST(:fire_time AS timestamptz), 'skipped', :reason, :owner, CAST(:now AS timestamptz),
            CAST(:now AS timestamptz))
    ON CONFLICT (job, fire_time) DO NOTHING
    RETURNING id
    """
)

# -- name: job_fire_at -- the row of one (job, fire_time), if any scheduler recorded it.
JOB_FIRE_AT = text(
    "SELECT * FROM job_fires WHERE job = :job AND fire_time = CAST(:fire_time AS timestamptz)"
)

# -- name: job_known_before -- whether a job has any recorded fire before an instant (a job
# -- deployed after its last fire time has nothing to catch up).
JOB_KNOWN_BEFORE = text(
    "SELECT EXISTS (SELECT 1 FROM job_fires WHERE job = :job AND fire_time < CAST(:before AS timestamptz))"
)

# -- name: last_job_fires -- the latest fire of every job (for `flowbot jobs`).
LAST_JOB_FIRES = text(
    """
    SELECT DISTINCT ON (job) job, fire_time, manual, status, reason, runs_created, error, finished_at
    FROM job_fires ORDER BY job, fire_time DESC
    """
)

# -- name: runs_by_workflow_status -- runs created in a window (test runs left out), by workflow and status.
RUNS_BY_WORKFLOW_STATUS = text(
    """
    SELECT workflow, status, count(*) AS n FROM runs
    WHERE created_at >= CAST(:since AS timestamptz) AND created_at < CAST(:until AS timestamptz) AND NOT test
    GROUP BY workflow, status ORDER BY workflow, status
    """
)

# -- name: slowest_steps -- stages whose tasks finished in a window (not of test runs), slowest first.
SLOWEST_STEPS = text(
    """
    SELECT workflow, stage, count(*) AS n,
           EXTRACT(EPOCH FROM avg(finished_at - started_at)) AS avg_seconds,
           EXTRACT(EPOCH FROM max(finished_at - started_at)) AS max_seconds
    FROM tasks
    WHERE finished_at >= CAST(:since AS timestamptz) AND finished_at < CAST(:until AS timestamptz)
      AND started_at IS NOT NULL AND status = 'completed'
      AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = tasks.run_id AND r.test)
    GROUP BY workflow, stage
    ORDER BY max_seconds DESC, workflow, stage
    LIMIT :limit
    """
)

# ---------------------------------------------------------------------------------------------
# Hooks: a delivery committed in one statement (the hot path of `POST /hooks/<path>`)
# ---------------------------------------------------------------------------------------------

# -- name: deliver_hooks -- record a batch of hook deliveries (group commit: the requests that
# -- arrived while the previous batch was in flight) and start their runs (one per send, ids made by
# -- the caller) with their first script tasks and "created" events, as ONE statement in its own
# -- implicit transaction (one round trip, one commit for the batch). Items are numbered by the
# -- caller; runs and tasks carry their item's number. An item whose delivery id a concurrent twin
# -- (or an earlier delivery) holds gets no delivery row, and then none of its runs or tasks are
# -- inserted; `kept` lists the items that were committed. (The caller puts at most one item per
# -- (hook, delivery id) in a batch. Workers are woken by a separate, coalesced NOTIFY: a NOTIFY
# -- here would serialise the commits.)
DELIVER_HOOKS = text(
    """
    WITH input AS (
        SELECT * FROM unnest(CAST(:items AS int[]), CAST(:hooks AS text[]), CAST(:delivery_ids AS text[]),
                             CAST(:methods AS text[]), CAST(:statuses AS int[]),
                             CAST(CAST(:headers AS text[]) AS jsonb[]), CAST(:bodies AS bytea[]),
                             CAST(CAST(:run_ids_json AS text[]) AS jsonb[]),
                             CAST(CAST(:unrouted AS text[]) AS jsonb[]), CAST(CAST(:logs AS text[]) AS jsonb[]),
                             CAST(:nows AS timestamptz[]))
             AS x(item, hook, delivery_id, method, status, headers, body, run_ids, unrouted, log, at)
    ), d AS (
        INSERT INTO hook_deliveries (hook, delivery_id, method, status, response_headers, response_body,
                                     run_ids, unrouted, log, created_at)
        SELECT hook, delivery_id, method, status, headers, body, run_ids, unrouted, log, at FROM input
        ON CONFLICT (hook, delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
        RETURNING hook, delivery_id
    ), kept AS (
        SELECT i.item FROM input i WHERE i.delivery_id IS NULL
        UNION ALL
        SELECT i.item FROM input i JOIN d ON d.hook = i.hook AND d.delivery_id = i.delivery_id
    ), run_input AS (
        SELECT * FROM unnest(CAST(:run_items AS int[]), CAST(:run_ids AS uuid[]), CAST(:workflows AS text[]),
                             CAST(CAST(:triggers AS text[]) AS jsonb[]), CAST(CAST(:contexts AS text[]) AS jsonb[]),
                             CAST(:actors AS text[]), CAST(:run_nows AS timestamptz[]), CAST(:versions AS text[]))
             AS r(item, id, workflow, trigger, context, actor, at, version)
        WHERE r.item IN (SELECT item FROM kept)
    ), new_runs AS (
        INSERT INTO runs (id, workflow, workflow_version, trigger, context, status, created_at, updated_at)
        SELECT id, workflow, version, trigger, context, 'running', at, at FROM run_input
    ), new_tasks AS (
        INSERT INTO tasks (run_id, workflow, stage, kind, type, payload, status, max_attempts,
                           lease_seconds, available_at, created_at, created_by)
        SELECT r.id, r.workflow, x.stage, 'script', x.type, x.payload, 'pending', x.max_attempts,
               x.lease_seconds, r.at, r.at, r.actor
        FROM unnest(CAST(:task_run_ids AS uuid[]), CAST(:stages AS text[]), CAST(:types AS text[]),
                    CAST(CAST(:payloads AS text[]) AS jsonb[]), CAST(:max_attempts AS int[]),
                    CAST(:leases AS int[]))
             AS x(run_id, stage, type, payload, max_attempts, lease_seconds)
        JOIN run_input r ON r.id = x.run_id
    )
    SELECT array(SELECT item FROM kept) AS kept
    """
)
