"""The statements the test kit (``engine.testing``) sends: is the engine idle, and when are the
form follow-ups of waiting tasks due. Nothing in a running flowbot uses them."""

from __future__ import annotations

from sqlalchemy import text

# -- name: kit_busy -- work the engine can do now: tasks running or due, effects due to deliver.
KIT_BUSY = text(
    """
    SELECT (SELECT count(*) FROM tasks WHERE status = 'locked')
         + (SELECT count(*) FROM tasks WHERE status = 'pending' AND kind = 'script'
                                          AND available_at <= CAST(:now AS timestamptz)) AS tasks,
           (SELECT count(*) FROM outbox WHERE status = 'pending' AND available_at <= CAST(:now AS timestamptz)
                                          AND kind = ANY(CAST(:kinds AS text[]))) AS effects
    """
)

# -- name: kit_waiting_forms -- form tasks waiting on a person, with when they were created.
KIT_WAITING_FORMS = text(
    """
    SELECT workflow, stage, created_at FROM tasks WHERE status = 'pending' AND kind = 'form'
    """
)

# -- name: kit_next_effect -- when the next effect put off for later (a retry) is due.
KIT_NEXT_EFFECT = text(
    """
    SELECT min(available_at) AS due FROM outbox WHERE status = 'pending' AND available_at > CAST(:now AS timestamptz)
                                          AND kind = ANY(CAST(:kinds AS text[]))
    """
)
