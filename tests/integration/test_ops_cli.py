"""Operations through the real ``flowbot`` command in subprocesses: on the local database as
``--as PERSON`` / ``FLOWBOT_AS`` (or the local admin), and against a remote server's API with
``FLOWBOT_URL`` and a person's token. Refusals print the API's reason and exit 1; usage errors
exit 2; nothing prints a traceback."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import cli_env, flowbot, scalar

from engine.ops import tokens
from tests.opsworld import ADMIN, ANN, BOB, CLAIM, EVE, OPS, STAGES, VIC, served, settings_for, write_stages


@pytest.fixture
def stages(tmp_path: Path) -> Path:
    return write_stages(tmp_path / "stages", STAGES)


@pytest.fixture
def env(database_url: str, stages: Path, tmp_path: Path) -> dict[str, str]:
    return cli_env(database_url, stages, FLOWBOT_HOME=str(tmp_path / "home"))


def ok(*args: str, env: dict[str, str]) -> str:
    out = flowbot(*args, env=env)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    return out.stdout


def refused(*args: str, env: dict[str, str], code: int = 1) -> str:
    out = flowbot(*args, env=env)
    assert out.returncode == code, (args, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""
    return out.stderr


def tasks_of(run_id: str, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {t["stage"]: t for t in json.loads(ok("tasks", "--run", run_id, "--json", env=env))}


def test_start_approve_cancel_rerun_and_the_audit_trail_from_the_cli(env) -> None:
    run_id = ok("start", "pay", "--answers", json.dumps(CLAIM), "--as", ANN, env=env).strip()
    uuid.UUID(run_id)
    review = tasks_of(run_id, env)["review"]
    assert review["status"] == "pending" and review["assignee"] == {"users": [BOB]}
    task = str(review["id"])

    err = refused("tasks", "approve", task, "--as", EVE, env=env)
    assert f"flowbot: {EVE} may not submit tasks" in err and BOB in err
    err = refused("tasks", "decline", task, env={**env, "FLOWBOT_AS": BOB})
    assert "comment" in err
    assert refused("tasks", "submit", task, env=env, code=2).startswith("flowbot: usage:")
    err = refused("tasks", "submit", task, "--answers", "{nope", env=env)
    assert "--answers is not valid JSON" in err

    out = ok("tasks", "approve", task, "--as", BOB, env=env)
    assert f"task {task} approved by {BOB}" in out
    err = refused("tasks", "approve", task, env=env)
    assert f"already completed by {BOB}" in err

    err = refused("runs", "cancel", run_id[:8], "--as", EVE, env=env)
    assert "may not cancel runs of pay" in err
    out = ok("runs", "cancel", run_id[:8], "--reason", "duplicate", env=env)
    assert f"run {run_id} cancelled (1 open task(s) cancelled)" in out
    assert "already cancelled" in refused("runs", "cancel", run_id, env=env)

    report = ok("runs", "show", run_id, env=env)
    assert "status    cancelled" in report and "audit:" in report
    assert f"{ANN} (starter) via cli: start" in report and f"{BOB} (assignee) via cli: approve task {task}" in report
    assert "(admin) via cli: cancel" in report and 'reason="duplicate"' in report
    assert "local:" in report

    new = ok("runs", "rerun", run_id, "--as", OPS, env=env).strip()
    data = json.loads(ok("runs", "show", new, "--json", env=env))
    assert data["rerun_of"] == run_id and data["status"] == "waiting"
    assert json.loads(ok("runs", "show", run_id, "--json", env=env))["reruns"] == [new]

    trail = json.loads(ok("audit", "--actor", BOB, "--json", env=env))
    assert [(a["action"], a["edge"]) for a in trail] == [("approve", "cli")]
    lines = ok("audit", "--run", run_id[:8], env=env).splitlines()
    assert [line.split(": ", 1)[1].split()[0] for line in lines] == ["rerun", "cancel", "approve", "start"]
    assert "read the audit trail" in refused("audit", "--as", ANN, env=env)


def test_retry_of_a_failed_run_and_a_usage_error_from_the_cli(env, database_url) -> None:
    run_id = ok("start", "pay", "--answers", json.dumps({**CLAIM, "amount": 5000}), "--as", ANN, env=env).strip()
    task = str(tasks_of(run_id, env)["review"]["id"])
    ok("tasks", "approve", task, "--as", BOB, env=env)
    assert "nothing failed" in refused("runs", "retry", run_id, env=env)
    assert refused("runs", "retry", env=env, code=2).startswith("flowbot: usage: flowbot runs retry RUN_ID")
    assert "no run abcdef12" in refused("runs", "retry", "abcdef12", env=env)
    assert "no task 99999" in refused("tasks", "retry", "99999", env=env)


def test_the_outbox_and_tokens_from_the_cli(env) -> None:
    ok("start", "pay", "--answers", json.dumps(CLAIM), "--as", ANN, env=env)
    listing = ok("outbox", env=env)
    assert listing.splitlines()[0].split() == ["id", "kind", "status", "target", "age", "attempts", "error"]
    [row] = listing.splitlines()[1:]
    effect = row.split()[0]
    assert "form.assigned" in row and "pending" in row
    assert json.loads(ok("outbox", "--status", "failed", "--json", env=env)) == []
    assert "only a failed effect" in refused("outbox", "retry", effect, env=env)
    assert "may not retry or discard outbox effects" in refused("outbox", "discard", effect, "--as", OPS, env=env)
    assert f"outbox effect {effect} is discarded" in ok("outbox", "discard", effect, env=env)
    assert ok("outbox", env=env).strip() == "(none)"

    made = flowbot("tokens", "create", "--user", BOB, "--expires", "90d", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("fbt_") and "shown only this once" in made.stderr
    listed = ok("tokens", "list", env=env)
    assert BOB in listed and token not in listed and "member" in listed
    assert "a duration is a number and a unit" in refused("tokens", "create", "--user", BOB, "--expires", "soon",
                                                         env=env)
    assert "is not a person" in refused("tokens", "create", "--user", "bob", env=env)
    token_id = json.loads(ok("tokens", "list", "--json", env=env))[0]["id"]
    assert f"token {token_id} of {BOB} revoked" in ok("tokens", "revoke", str(token_id), env=env)
    assert "already revoked" in refused("tokens", "revoke", str(token_id), env=env)
    actions = [a["action"] for a in json.loads(ok("audit", "--json", env=env))]
    assert actions[:3] == ["token.revoke", "token.create", "outbox.discard"]


async def test_the_cli_against_a_remote_server_acts_through_a_persons_token(database_url, tmp_path, stages) -> None:
    async with served(settings_for(database_url, tmp_path)) as (app, ops, api):
        bob = await tokens.create(ops, ADMIN, BOB)
        remote = cli_env(None, None, FLOWBOT_URL=api.base, FLOWBOT_TOKEN=bob["token"],
                         FLOWBOT_HOME=str(tmp_path / "nohome"))

        def cli(*args: str) -> Any:
            return asyncio.to_thread(flowbot, *args, env=remote)

        status, body = await api.as_person(ANN).call("POST", "/api/workflows/pay/start", {"answers": CLAIM})
        run_id = body["run_id"]
        listed = await cli("tasks", "--run", run_id, "--json")
        assert listed.returncode == 0, listed.stderr
        task = str(next(t["id"] for t in json.loads(listed.stdout) if t["stage"] == "review"))

        out = await cli("runs", "cancel", run_id)
        status, body = await api.as_person(BOB).call("POST", f"/api/runs/{run_id}/cancel", {})
        assert out.returncode == 1 and out.stderr.strip() == f"flowbot: {body['error']}" and status == 403

        out = await cli("tasks", "approve", task)
        assert out.returncode == 0 and f"approved by {BOB}" in out.stdout, out.stderr
        out = await cli("tasks", "approve", task)
        assert out.returncode == 1 and f"already completed by {BOB}" in out.stderr
        trail = await scalar(app.store, "SELECT jsonb_agg(jsonb_build_array(actor, action, edge) ORDER BY id) "
                                        "FROM audit WHERE action IN ('start', 'approve')")
        assert trail == [[ANN, "start", "api"], [BOB, "approve", "api"]]  # the remote CLI acts through the API

        # Tokens are managed remotely too, by an admin's token; Bob's may not.
        out = await cli("tokens", "list")
        assert out.returncode == 1 and "may not manage API tokens" in out.stderr
        ann = await tokens.create(ops, ADMIN, ANN, role="admin")
        admin = {**remote, "FLOWBOT_TOKEN": ann["token"]}
        made = await asyncio.to_thread(flowbot, "tokens", "create", "--user", VIC, "--expires", "7d", "--json",
                                       env=admin)
        assert made.returncode == 0, made.stderr
        vic = json.loads(made.stdout)
        assert vic["user"] == VIC and vic["token"].startswith("fbt_")
        listed = await asyncio.to_thread(flowbot, "tokens", "list", "--json", env=admin)
        assert VIC in [t["user"] for t in json.loads(listed.stdout)] and vic["token"] not in listed.stdout
        out = await asyncio.to_thread(flowbot, "tokens", "revoke", str(vic["id"]), env=admin)
        assert out.returncode == 0 and f"token {vic['id']} of {VIC} revoked" in out.stdout
        assert (await api.with_token(vic["token"]).call("GET", "/api/me"))[0] == 401
        trail = await scalar(app.store, "SELECT jsonb_agg(jsonb_build_array(actor, action, edge) ORDER BY id) "
                                        "FROM audit WHERE action LIKE 'token.%' AND actor = :a", a=ANN)
        assert trail == [[ANN, "token.create", "api"], [ANN, "token.revoke", "api"]]

        down = cli_env(None, None, FLOWBOT_URL="http://127.0.0.1:9", FLOWBOT_TOKEN="x")
        out = await asyncio.to_thread(flowbot, "runs", env=down)
        assert out.returncode == 1 and "cannot reach http://127.0.0.1:9" in out.stderr and "Traceback" not in out.stderr
