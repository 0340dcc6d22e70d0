"""Operations over HTTP (a real server on loopback): start forms, submissions with per-field
422s, approve and decline, cancel, retry, rerun, reassign, claim, the outbox, the audit trail,
people's tokens; every refusal changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import drain, scalar

from engine.ops import tokens
from tests.opsworld import ADMIN, ANN, BOB, CLAIM, EVE, FIN, OPS, SAM, TOM, VIC, Client, served, settings_for


@pytest.fixture
async def world(database_url: str, tmp_path: Path):
    async with served(settings_for(database_url, tmp_path)) as found:
        yield found


async def snapshot(store: Any) -> tuple[Any, ...]:
    """Everything a refused operation must leave as it was."""
    return (
        await scalar(store, "SELECT count(*) FROM runs"),
        await scalar(store, "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM tasks t"),
        await scalar(store, "SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY id), '[]') FROM runs r"),
        await scalar(store, "SELECT count(*) FROM outbox"),
        await scalar(store, "SELECT count(*) FROM audit"),
    )


async def started(api: Client, answers: dict[str, Any] | None = None, who: str = ANN) -> tuple[str, int]:
    """A pay run started from its start form by ``who``; (run id, review task id)."""
    status, body = await api.as_person(who).call("POST", "/api/workflows/pay/start", {"answers": answers or CLAIM})
    assert status == 201, body
    _, tasks = await api.call("GET", f"/api/tasks?run={body['run_id']}&stage=review")
    return body["run_id"], tasks[0]["id"]


async def test_a_start_form_submitted_over_the_api_starts_a_run_and_the_approval_completes_it(world) -> None:
    app, _, api = world
    run_id, task_id = await started(api)
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    assert report["status"] == "waiting" and report["trigger"]["user"] == ANN
    status, body = await api.as_person(BOB).call("POST", f"/api/tasks/{task_id}/submit",
                                                 {"answers": {"decision": "approved"}})
    assert status == 200 and body["by"] == BOB and body["action"] == "approve"
    await drain(app.store)
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    assert report["status"] == "completed" and report["context"]["paid"] == 42
    assert [(a["actor"], a["action"], a["edge"], a["acting_as"]) for a in report["audit"]] == [
        (ANN, "start", "api", "starter"), (BOB, "approve", "api", "assignee")]
    assert report["audit"][1]["detail"]["answers"] == {"decision": "approved", "comment": None}


async def test_invalid_answers_are_422_per_field_as_in_the_slack_modal_and_create_nothing(world) -> None:
    app, _, api = world
    before = await snapshot(app.store)
    status, body = await api.call("POST", "/api/workflows/pay/start",
                                  {"answers": {"note": "", "amount": "lots", "manager": "bob"}})
    assert status == 422
    assert set(body["errors"]) == {"note", "amount", "manager"}
    status, body = await api.call("POST", "/api/workflows/pay/start", {"answers": {**CLAIM, "colour": "red"}})
    assert status == 422 and body["errors"] == {"colour": "This form has no such field."}
    status, body = await api.call("POST", "/api/workflows/pay/start", {"answers": {**CLAIM, "amount": 0}})
    assert status == 422 and list(body["errors"]) == ["amount"]
    assert await snapshot(app.store) == before


async def test_a_decline_needs_a_comment_as_in_slack(world) -> None:
    app, _, api = world
    _, task_id = await started(api)
    bob = api.as_person(BOB)
    before = await snapshot(app.store)
    status, body = await bob.call("POST", f"/api/tasks/{task_id}/submit", {"answers": {"decision": "declined"}})
    assert status == 422 and "comment" in body["errors"]
    assert await snapshot(app.store) == before
    status, body = await bob.call("POST", f"/api/tasks/{task_id}/submit",
                                  {"answers": {"decision": "declined", "comment": "no receipt"}})
    assert status == 200 and body["action"] == "decline"
    await drain(app.store)
    assert (await app.store.report(body["run_id"]))["context"]["declined"] == "no receipt"


async def test_a_second_submission_is_409_naming_who_won_and_changes_nothing(world) -> None:
    app, _, api = world
    _, task_id = await started(api)
    await api.as_person(BOB).call("POST", f"/api/tasks/{task_id}/submit", {"answers": {"decision": "approved"}})
    before = await snapshot(app.store)
    status, body = await api.call("POST", f"/api/tasks/{task_id}/submit", {"answers": {"decision": "declined",
                                                                                        "comment": "x"}})
    assert status == 409 and body["by"] == BOB and f"already completed by {BOB}" in body["error"]
    assert await snapshot(app.store) == before


async def test_someone_else_may_not_submit_and_an_admin_acts_in_the_assignees_place(world) -> None:
    app, _, api = world
    run_id, task_id = await started(api)
    before = await snapshot(app.store)
    for who in (EVE, ANN, OPS, VIC):
        status, body = await api.as_person(who).call("POST", f"/api/tasks/{task_id}/submit",
                                                     {"answers": {"decision": "approved"}})
        assert status == 403 and who in body["error"] and BOB in body["error"], body
    assert await snapshot(app.store) == before
    status, body = await api.call("POST", f"/api/tasks/{task_id}/submit", {"answers": {"decision": "approved"}})
    assert status == 200
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    last = report["audit"][-1]
    assert (last["actor"], last["acting_as"], last["on_behalf_of"]) == ("api-token", "admin", BOB)


async def test_cancel_cancels_open_tasks_updates_cards_through_the_outbox_and_is_409_after(world) -> None:
    app, _, api = world
    run_id, task_id = await started(api)
    before = await snapshot(app.store)
    status, body = await api.as_person(EVE).call("POST", f"/api/runs/{run_id}/cancel", {"reason": "dup"})
    assert status == 403 and "operators" in body["error"]
    assert await snapshot(app.store) == before
    status, body = await api.as_person(FIN).call("POST", f"/api/runs/{run_id[:8]}/cancel", {"reason": "duplicate"})
    assert status == 200 and body == {"run_id": run_id, "status": "cancelled", "tasks_cancelled": 1, "by": FIN,
                                      "reason": "duplicate", "children_cancelled": []}
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    assert report["status"] == "cancelled" and report["steps"][1]["status"] == "cancelled"
    assert report["audit"][-1]["action"] == "cancel" and report["audit"][-1]["acting_as"] == "operator"
    effect = await scalar(app.store, "SELECT to_jsonb(o) FROM outbox o WHERE kind = 'form.cancelled'")
    assert effect["task_id"] == task_id and effect["payload"] == {"task_id": task_id, "by": FIN,
                                                                   "reason": "duplicate"}
    before = await snapshot(app.store)
    status, body = await api.call("POST", f"/api/runs/{run_id}/cancel", {})
    assert status == 409 and "already cancelled" in body["error"]
    status, body = await api.as_person(BOB).call("POST", f"/api/tasks/{task_id}/submit",
                                                 {"answers": {"decision": "approved"}})
    assert status == 409 and f"cancelled by {FIN}" in body["error"]
    assert await snapshot(app.store) == before


async def test_retry_runs_a_failed_task_again_with_fresh_attempts_and_keeps_its_history(world) -> None:
    app, _, api = world
    run_id, task_id = await started(api, {**CLAIM, "amount": 5000})
    await api.as_person(BOB).call("POST", f"/api/tasks/{task_id}/submit", {"answers": {"decision": "approved"}})
    await drain(app.store)
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    assert report["status"] == "failed"
    pay = report["steps"][-1]
    assert pay["status"] == "failed" and pay["attempts"] == 1
    before = await snapshot(app.store)
    assert (await api.as_person(VIC).call("POST", f"/api/runs/{run_id}/retry"))[0] == 403
    assert (await api.call("POST", f"/api/runs/{run_id}/retry", {"extra": 1}))[0] == 422
    assert await snapshot(app.store) == before
    status, body = await api.as_person(OPS).call("POST", f"/api/runs/{run_id}/retry")
    assert status == 200 and body["retried"] == [pay["task_id"]] and body["status"] == "running"
    row = await scalar(app.store, "SELECT to_jsonb(t) FROM tasks t WHERE id = :i", i=pay["task_id"])
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("pending", 1, 2)
    await drain(app.store)
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    assert report["status"] == "failed" and report["steps"][-1]["attempts"] == 2
    status, body = await api.call("POST", f"/api/tasks/{pay['task_id']}/retry")
    assert status == 200 and body["status"] == "pending"
    status, body = await api.call("POST", f"/api/tasks/{task_id}/retry")
    assert status == 409 and "only a failed task" in body["error"]
    history = await scalar(app.store, "SELECT count(*) FROM task_events WHERE task_id = :i AND to_status = 'failed'",
                           i=pay["task_id"])
    assert history == 2


async def test_a_run_that_did_not_fail_is_409_to_retry(world) -> None:
    app, _, api = world
    run_id, _ = await started(api)
    before = await snapshot(app.store)
    status, body = await api.call("POST", f"/api/runs/{run_id}/retry")
    assert status == 409 and "nothing failed" in body["error"]
    assert await snapshot(app.store) == before


async def test_rerun_starts_the_same_start_form_again_and_both_reports_show_the_link(world) -> None:
    _app, _, api = world
    run_id, _ = await started(api)
    status, body = await api.as_person(OPS).call("POST", f"/api/runs/{run_id}/rerun")
    assert status == 201 and body["rerun_of"] == run_id
    new = body["run_id"]
    _, old_report = await api.call("GET", f"/api/runs/{run_id}")
    _, new_report = await api.call("GET", f"/api/runs/{new}")
    assert old_report["reruns"] == [new] and new_report["rerun_of"] == run_id
    assert new_report["steps"][0]["stage"] == "submit" and new_report["steps"][1]["payload"]["manager"] == BOB
    assert new_report["trigger"] == {"kind": "rerun", "of": run_id, "user": OPS, "stage": "submit"}
    assert any(a["action"] == "rerun" for a in old_report["audit"])
    status, body = await api.call("POST", f"/api/runs/{run_id}/rerun", {"payload": {**CLAIM, "amount": -3}})
    assert status == 422 and list(body["errors"]) == ["amount"]
    status, body = await api.call("POST", f"/api/runs/{run_id}/rerun", {"payload": {**CLAIM, "amount": 7}})
    assert status == 201
    _, edited = await api.call("GET", f"/api/runs/{body['run_id']}")
    assert edited["steps"][1]["payload"]["amount"] == 7


async def test_a_script_started_run_is_rerun_with_its_payload(world) -> None:
    _app, _, api = world
    status, body = await api.call("POST", "/api/workflows/desk/runs", {"payload": {"summary": "VPN"}})
    assert status == 201
    status, body = await api.call("POST", f"/api/runs/{body['run_id']}/rerun", {"payload": {"summary": "DNS"}})
    assert status == 201
    _, report = await api.call("GET", f"/api/runs/{body['run_id']}")
    assert report["steps"][0]["stage"] == "open" and report["steps"][0]["payload"] == {"summary": "DNS"}


async def test_a_team_task_is_claimed_by_a_member_of_the_teams_file_then_submitted(world) -> None:
    app, _, api = world
    _, body = await api.call("POST", "/api/workflows/desk/runs", {"payload": {"summary": "VPN"}})
    await drain(app.store)
    _, tasks = await api.call("GET", f"/api/tasks?run={body['run_id']}&stage=resolve")
    task_id = tasks[0]["id"]
    before = await snapshot(app.store)
    status, answer = await api.as_person(EVE).call("POST", f"/api/tasks/{task_id}/claim")
    assert status == 403 and "@helpers" in answer["error"]
    assert await snapshot(app.store) == before
    status, answer = await api.as_person(TOM).call("POST", f"/api/tasks/{task_id}/claim")
    assert status == 200 and answer["claimed_by"] == TOM
    status, answer = await api.as_person(SAM).call("POST", f"/api/tasks/{task_id}/claim")
    assert status == 403  # no longer Sam's team's: Tom's alone
    status, answer = await api.as_person(TOM).call("POST", f"/api/tasks/{task_id}/submit",
                                                   {"answers": {"resolution": "restarted"}})
    assert status == 200
    _, report = await api.call("GET", f"/api/runs/{body['run_id']}")
    assert report["status"] == "completed" and report["context"]["resolution"] == "restarted"
    assert [a["action"] for a in report["audit"]] == ["start", "claim", "submit"]


async def test_reassign_by_the_assignee_or_an_operator_and_never_to_a_non_person(world) -> None:
    app, _, api = world
    _, task_id = await started(api)
    before = await snapshot(app.store)
    for who, target, status in ((EVE, TOM, 403), (BOB, "bob", 422), (BOB, "", 422)):
        got, _ = await api.as_person(who).call("POST", f"/api/tasks/{task_id}/reassign", {"to": target})
        assert got == status
    assert await snapshot(app.store) == before
    status, body = await api.as_person(BOB).call("POST", f"/api/tasks/{task_id}/reassign", {"to": TOM})
    assert status == 200 and body["assignee"] == {"users": [TOM]}
    status, body = await api.as_person(OPS).call("POST", f"/api/tasks/{task_id}/reassign", {"to": SAM})
    assert status == 200
    assert (await api.as_person(BOB).call("POST", f"/api/tasks/{task_id}/submit",
                                          {"answers": {"decision": "approved"}}))[0] == 403
    assert (await api.as_person(SAM).call("POST", f"/api/tasks/{task_id}/submit",
                                          {"answers": {"decision": "approved"}}))[0] == 200
    effects = await scalar(app.store, "SELECT count(*) FROM outbox WHERE kind = 'form.handover'")
    assert effects == 2


async def test_unknown_ids_are_404_and_change_nothing(world) -> None:
    app, _, api = world
    before = await snapshot(app.store)
    for method, path in (("POST", "/api/runs/00000000-0000-0000-0000-000000000000/cancel"),
                         ("POST", "/api/runs/abcd/retry"), ("POST", "/api/runs/zz/rerun"),
                         ("POST", "/api/tasks/999999/submit"), ("POST", "/api/tasks/x/claim"),
                         ("POST", "/api/tasks/424242/retry"), ("POST", "/api/workflows/nope/start"),
                         ("POST", "/api/outbox/77/retry"), ("GET", "/api/runs/ffff")):
        status, body = await api.call(method, path, {} if method == "POST" else None)
        assert status == 404, (path, body)
        assert body["error"].startswith("no ")
    assert await snapshot(app.store) == before


async def test_the_outbox_lists_waiting_effects_and_an_admin_retries_or_discards_them(world) -> None:
    app, _, api = world
    await started(api)
    await app.db.fetch_one(
        __import__("sqlalchemy").text("UPDATE outbox SET status = 'failed', error = 'channel_not_found' RETURNING id"))
    status, rows = await api.call("GET", "/api/outbox")
    assert status == 200 and rows[0]["kind"] == "form.assigned" and rows[0]["error"] == "channel_not_found"
    assert rows[0]["status"] == "failed" and rows[0]["age_seconds"] >= 0
    effect = rows[0]["id"]
    assert (await api.as_person(OPS).call("GET", "/api/outbox"))[0] == 403
    assert (await api.call("GET", "/api/outbox?status=lost"))[0] == 422
    status, body = await api.call("POST", f"/api/outbox/{effect}/retry")
    assert status == 200 and body["status"] == "pending"
    status, body = await api.call("POST", f"/api/outbox/{effect}/retry")
    assert status == 409 and "only a failed effect" in body["error"]
    status, body = await api.call("POST", f"/api/outbox/{effect}/discard")
    assert status == 200 and body["status"] == "discarded"
    assert (await api.call("GET", "/api/outbox"))[1] == []
    _, trail = await api.call("GET", "/api/audit?actor=api-token")
    assert [a["action"] for a in trail][:2] == ["outbox.discard", "outbox.retry"]


async def test_a_persons_token_acts_as_them_until_revoked_or_expired(world) -> None:
    app, ops, api = world
    made = await tokens.create(ops, ADMIN, BOB, expires="1d")
    assert made["token"].startswith("fbt_") and made["user"] == BOB
    stored = await scalar(app.store, "SELECT token_hash FROM api_tokens WHERE id = :i", i=made["id"])
    assert made["token"] not in stored
    bob = api.with_token(made["token"])
    _, task_id = await started(api)
    status, me = await bob.call("GET", "/api/me")
    assert status == 200 and me == {"person": BOB, "role": "member"}
    assert (await bob.call("GET", "/api/outbox"))[0] == 403
    assert (await bob.call("POST", f"/api/tasks/{task_id}/submit", {"answers": {"decision": "approved"}}))[0] == 200
    await tokens.revoke(ops, ADMIN, made["id"])
    assert (await bob.call("GET", "/api/me"))[0] == 401
    admin = await tokens.create(ops, ADMIN, ANN, role="admin")
    status, me = await api.with_token(admin["token"]).call("GET", "/api/outbox")
    assert status == 200
    trail = await scalar(app.store, "SELECT jsonb_agg(action ORDER BY id) FROM audit WHERE action LIKE 'token.%'")
    assert trail == ["token.create", "token.revoke", "token.create"]


async def test_members_see_the_runs_of_workflows_they_operate_or_view_and_those_they_started(world) -> None:
    _app, _, api = world
    mine, _ = await started(api, who=ANN)
    _, desk = await api.call("POST", "/api/workflows/desk/runs", {"payload": {}})
    for who, expected in ((ANN, {mine}), (VIC, {mine}), (FIN, {mine}), (EVE, set())):
        _, rows = await api.as_person(who).call("GET", "/api/runs")
        assert {r["id"] for r in rows} == expected, who
    assert (await api.as_person(EVE).call("GET", f"/api/runs/{mine}"))[0] == 403
    assert (await api.as_person(EVE).call("GET", f"/api/runs/{desk['run_id']}"))[0] == 403
    assert (await api.as_person(BOB).call("GET", f"/api/runs/{mine}"))[0] == 200  # an assignee
    assert (await api.as_person(EVE).call("GET", "/api/audit"))[0] == 403
    _, trail = await api.as_person(ANN).call("GET", f"/api/audit?run={mine}")
    assert [a["action"] for a in trail] == ["start"]



async def test_a_members_task_list_fills_its_limit_past_newer_tasks_they_may_not_see(world) -> None:
    _app, _, api = world
    _, review = await started(api, who=ANN)  # Bob approves it
    for _ in range(3):
        await api.call("POST", "/api/workflows/desk/runs", {"payload": {}})
    status, rows = await api.as_person(BOB).call("GET", "/api/tasks?limit=1")
    assert status == 200 and [r["id"] for r in rows] == [review]
    _, everything = await api.call("GET", "/api/tasks?limit=1")
    assert everything[0]["id"] > review  # an admin's newest task is one Bob may not see
