"""The statements of retention (``engine.store.retention``): finished runs and old trigger
records deleted in small batches, and what a purge would delete. Times are parameters.
"""

from __future__ import annotations

from sqlalchemy import text

# ---------------------------------------------------------------------------------------------
# Retention (engine.store.retention): finished runs and old trigger records deleted in small batches
# ---------------------------------------------------------------------------------------------

# -- name: try_lock_retention -- one purger at a time: a session lock held by a connection of its
# -- own for the whole pass, outside any transaction (an open transaction would keep vacuum from
# -- reclaiming what the pass deletes); released at the end, or when the connection goes.
TRY_LOCK_RETENTION = text("SELECT pg_try_advisory_lock(hashtext('flowbot.retention'))")

# -- name: unlock_retention -- the pass is over.
UNLOCK_RETENTION = text("SELECT pg_advisory_unlock(hashtext('flowbot.retention'))")

#: What goes with a batch of runs (the ``victims`` CTE, an array of run ids): their tasks, the
#: tasks' events, their outbox rows and audit records; the counts of each.
_DELETE_VICTIMS = """
    ), doomed AS (
        SELECT coalesce(array_agg(id), '{}') AS ids FROM tasks
        WHERE run_id = ANY(CAST((SELECT ids FROM victims) AS uuid[]))
    ), events AS (
        DELETE FROM task_events WHERE task_id = ANY(CAST((SELECT ids FROM doomed) AS bigint[])) RETURNING 1
    ), effects AS (
        DELETE FROM outbox
        WHERE run_id = ANY(CAST((SELECT ids FROM victims) AS uuid[]))
           OR task_id = ANY(CAST((SELECT ids FROM doomed) AS bigint[]))
        RETURNING 1
    ), trail AS (
        DELETE FROM audit WHERE run_id = ANY(CAST((SELECT ids FROM victims) AS uuid[])) RETURNING 1
    ), gone_tasks AS (
        DELETE FROM tasks WHERE id = ANY(CAST((SELECT ids FROM doomed) AS bigint[])) RETURNING 1
    ), gone_runs AS (
        DELETE FROM runs WHERE id = ANY(CAST((SELECT ids FROM victims) AS uuid[])) RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone_runs) AS runs, (SELECT count(*) FROM gone_tasks) AS tasks,
           (SELECT count(*) FROM events) AS task_events, (SELECT count(*) FROM effects) AS outbox,
           (SELECT count(*) FROM trail) AS audit
    """

# -- name: purge_runs -- one batch: up to :limit runs finished before :before, oldest first, deleted
# -- with their tasks, task events, outbox rows and audit records (join arrivals, form sessions and Slack cards go
# -- by cascade). Runs another transaction holds (a worker committing to it) are skipped, never
# -- waited for; a worker that then commits to a deleted run's task finds it gone (its result is
# -- dropped, as for any lost lease).
PURGE_RUNS = text(
    """
    WITH victims AS (
        -- Arrays, not row sets: every delete below is an index lookup by id (= ANY), never a scan.
        SELECT coalesce(array_agg(id), '{}') AS ids FROM (
            SELECT id FROM runs
            WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < CAST(:before AS timestamptz)
            ORDER BY finished_at
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        ) AS v"""
    + _DELETE_VICTIMS
)

# -- name: purge_test_runs -- one batch: up to :limit test runs created before :before (open or
# -- finished; a test run's children are test runs too), with what purge_runs deletes with a run.
PURGE_TEST_RUNS = text(
    """
    WITH victims AS (
        -- Arrays, not row sets: every delete below is an index lookup by id (= ANY), never a scan.
        SELECT coalesce(array_agg(id), '{}') AS ids FROM (
            SELECT id FROM runs
            WHERE test AND created_at <= CAST(:before AS timestamptz)
            ORDER BY created_at
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        ) AS v"""
    + _DELETE_VICTIMS
)

# -- name: count_test_runs -- what `flowbot runs purge --test` would delete.
COUNT_TEST_RUNS = text(
    """
    WITH victims AS (
        SELECT id FROM runs WHERE test AND created_at <= CAST(:before AS timestamptz)
    ), doomed AS (
        SELECT id FROM tasks WHERE run_id IN (SELECT id FROM victims)
    )
    SELECT (SELECT count(*) FROM victims) AS runs,
           (SELECT count(*) FROM doomed) AS tasks,
           (SELECT count(*) FROM task_events WHERE task_id IN (SELECT id FROM doomed)) AS task_events,
           (SELECT count(*) FROM outbox WHERE run_id IN (SELECT id FROM victims) OR task_id IN (SELECT id FROM doomed))
               AS outbox,
           (SELECT count(*) FROM audit WHERE run_id IN (SELECT id FROM victims)) AS audit
    """
)

# -- name: purge_orphan_outbox -- one batch: effects of no run (and no task) delivered or failed
# -- before :before, oldest first (ix_outbox_run_id finds the NULLs); stops at the first newer one.
PURGE_ORPHAN_OUTBOX = text(
    """
    WITH oldest AS (
        SELECT id, status, created_at FROM outbox WHERE run_id IS NULL AND task_id IS NULL
        ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM outbox o USING oldest
        WHERE o.id = oldest.id AND oldest.status <> 'pending' AND oldest.created_at < CAST(:before AS timestamptz)
        RETURNING 1
    )
    SELECT count(*) AS n FROM gone
    """
)

# -- name: purge_hook_deliveries -- one batch: the oldest delivery records (by id, which follows
# -- arrival), those received before :before deleted. Fewer than :limit deleted means the next
# -- ones are still inside the idempotency window (or there are none): the pass stops there.
PURGE_HOOK_DELIVERIES = text(
    """
    WITH oldest AS (
        SELECT id, created_at FROM hook_deliveries ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM hook_deliveries h USING oldest
        WHERE h.id = oldest.id AND oldest.created_at < CAST(:before AS timestamptz)
        RETURNING 1
    )
    SELECT count(*) AS n FROM gone
    """
)

# -- name: purge_events -- one batch: events older than the lookback (a wait that begins now no
# -- longer matches them), oldest first by id (the primary key), stopping at the first newer one.
PURGE_EVENTS = text(
    """
    WITH old AS (
        SELECT id FROM events WHERE created_at < CAST(:before AS timestamptz)
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM events e USING old WHERE e.id = old.id RETURNING 1
    )
    SELECT count(*) AS n FROM gone
    """
)

# -- name: purge_job_fires -- one batch: fire records before :before, except each job's latest
# -- (the scheduler's catch-up rule asks whether a job has fired before).
PURGE_JOB_FIRES = text(
    """
    WITH old AS (
        SELECT f.id FROM job_fires f
        WHERE f.fire_time < CAST(:before AS timestamptz)
          AND EXISTS (SELECT 1 FROM job_fires later WHERE later.job = f.job AND later.fire_time > f.fire_time)
        ORDER BY f.fire_time
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM job_fires j USING old WHERE j.id = old.id RETURNING 1
    )
    SELECT count(*) AS n FROM gone
    """
)

# -- name: count_purgeable -- what a purge would delete now (`flowbot purge --dry-run`).
COUNT_PURGEABLE = text(
    """
    WITH victims AS (
        SELECT id FROM runs
        WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < CAST(:runs_before AS timestamptz)
    ), doomed AS (
        SELECT id FROM tasks WHERE run_id IN (SELECT id FROM victims)
    )
    SELECT (SELECT count(*) FROM victims) AS runs,
           (SELECT count(*) FROM doomed) AS tasks,
           (SELECT count(*) FROM task_events WHERE task_id IN (SELECT id FROM doomed)) AS task_events,
           (SELECT count(*) FROM outbox WHERE run_id IN (SELECT id FROM victims) OR task_id IN (SELECT id FROM doomed)
              OR (run_id IS NULL AND task_id IS NULL AND status <> 'pending'
                  AND created_at < CAST(:runs_before AS timestamptz))) AS outbox,
           (SELECT count(*) FROM audit WHERE run_id IN (SELECT id FROM victims)) AS audit,
           (SELECT count(*) FROM events WHERE created_at < CAST(:events_before AS timestamptz)) AS events,
           (SELECT count(*) FROM hook_deliveries WHERE created_at < CAST(:hooks_before AS timestamptz))
               AS hook_deliveries,
           (SELECT count(*) FROM job_fires f WHERE f.fire_time < CAST(:jobs_before AS timestamptz)
              AND EXISTS (SELECT 1 FROM job_fires later WHERE later.job = f.job AND later.fire_time > f.fire_time))
               AS job_fires
    """
)
