"""Operations on runs and tasks, as people and operators do them, on every edge.

Each operation (cancel, retry and rerun a run; submit, approve, decline, claim, reassign and
retry a task; start a start form; retry or discard an outbox effect; create or revoke a token)
is written once here, with its access check (``access``: one table of who may do what) and its
audit record (``engine.store.audit``) in the same transaction as its state change. A refused
operation changes nothing and raises a ``engine.errors.Refused`` (404, 403, 409, 422). The CLI,
the HTTP API and the Slack app call these functions; nothing here knows about Slack.

May import: ``engine.people``, ``engine.runtime``, ``engine.store`` and the authoring layer.
Imported by ``web``, ``cli`` and ``bot``.
"""
