"""`flowbot hooks`, and hooks served by a real `flowbot run` process (subprocesses)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from support import cli_env, flowbot, free_port, spawn, stop, wait_listening, write_stages

from engine.triggers.hooks import sign_hmac

FILES = {
    "deploys/workflow.py": """
        from engine import GitHubAuth, HmacAuth, Workflow
        workflow = Workflow("deploys")
        github = workflow.hook("github", path="deploys/github", auth=GitHubAuth("DEPLOY_GH_SECRET"))
        ci = workflow.hook("ci", auth=HmacAuth("CI_SECRET", header="X-CI-Signature"), accept="application/json")
        status = workflow.hook("status", path="deploys/status", auth=None, methods=["GET", "POST"])
        deploy = workflow.script("deploy")
        workflow.transition(github, deploy)
        workflow.transition(ci, deploy, on="build")
    """,
    "deploys/github.py": "def run(request, ctx):\n    ctx.send('push', request.data)\n",
    "deploys/ci.py": """
        def run(request, ctx):
            ctx.send("build", {"sha": request.data["sha"]})
            return {"queued": request.data["sha"]}
    """,
    "deploys/status.py": "def run(request, ctx):\n    return {'ok': True}\n",
    "deploys/deploy.py": "def run(task, ctx):\n    ctx.run['deployed'] = task['sha']\n",
}


def test_flowbot_hooks_lists_every_hook_with_its_url_methods_and_auth(tmp_path: Path) -> None:
    stages = write_stages(tmp_path / "stages", FILES)
    env = cli_env(None, stages, DEPLOY_GH_SECRET="x", PORT="9000")
    env.pop("CI_SECRET", None)

    out = flowbot("hooks", env=env)

    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "URLs use port 9000 (PORT of this command; if the server was started with another, pass --port or "
        "--base-url)",
        "Secrets are checked here, in this command's environment: the server reads its own.",
        "POST http://localhost:9000/hooks/deploys/github  (deploys/github)",
        "    auth: GitHub signature (X-Hub-Signature-256, secret from $DEPLOY_GH_SECRET); $DEPLOY_GH_SECRET set here",
        "POST http://localhost:9000/hooks/ci  (deploys/ci)",
        "    auth: HMAC-SHA256 signature (X-CI-Signature, secret from $CI_SECRET); "
        "$CI_SECRET NOT SET here: if the server lacks it too, requests get 503 until it is set",
        "GET POST http://localhost:9000/hooks/deploys/status  (deploys/status)",
        "    auth: NONE (auth=None: anyone who can reach the URL may call it)",
    ]
    with_port = flowbot("hooks", "--port", "8123", env=env).stdout.splitlines()
    assert with_port[0].startswith("URLs use port 8123 (--port of this command")
    assert with_port[2] == "POST http://localhost:8123/hooks/deploys/github  (deploys/github)"


def test_flowbot_hooks_json_uses_the_public_base_url(tmp_path: Path) -> None:
    stages = write_stages(tmp_path / "stages", FILES)
    env = cli_env(None, stages, DEPLOY_GH_SECRET="x")

    out = flowbot("hooks", "--json", "--base-url", "https://flow.example.com/", env=env)

    assert out.returncode == 0, out.stderr
    hooks = {h["stage"]: h for h in json.loads(out.stdout)}
    assert hooks["github"]["url"] == "https://flow.example.com/hooks/deploys/github"
    assert hooks["ci"]["accept"] == ["application/json"]
    assert (hooks["ci"]["secret_env"], hooks["ci"]["secret_set"]) == ("CI_SECRET", False)
    assert (hooks["status"]["auth"], hooks["status"]["methods"]) == (None, ["GET", "POST"])
    assert hooks["github"]["file"].endswith("deploys/workflow.py:3")


def test_flowbot_hooks_refuses_invalid_hooks_with_file_and_line(tmp_path: Path) -> None:
    broken = dict(FILES)
    broken["deploys/workflow.py"] = FILES["deploys/workflow.py"].replace(
        'accept="application/json"', 'accept="json", retries=3')
    stages = write_stages(tmp_path / "stages", broken)

    out = flowbot("hooks", env=cli_env(None, stages))

    assert out.returncode == 1
    workflow = stages / "deploys" / "workflow.py"
    assert f"{workflow}:4: hook \"ci\": unknown option(s) retries" in out.stderr
    assert f"{workflow}:4: hook \"ci\": accept= entry 'json' is not a media type" in out.stderr


def test_flowbot_run_serves_a_signed_hook_and_its_worker_runs_the_next_stage(
        database_url: str, tmp_path: Path) -> None:
    stages = write_stages(tmp_path / "stages", FILES)
    env = cli_env(database_url, stages, FLOWBOT_HOME=str(tmp_path / "home"), CI_SECRET="ci-secret",
                  DEPLOY_GH_SECRET="gh-secret", FLOWBOT_LOG_LEVEL="WARNING")
    port, log = free_port(), tmp_path / "run.log"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log)
        body = b'{"sha": "abc123"}'
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/hooks/ci", data=body, method="POST",
            headers={"Content-Type": "application/json", **sign_hmac("ci-secret", body, header="X-CI-Signature")})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert (resp.status, json.loads(resp.read())) == (200, {"queued": "abc123"})
        unsigned = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/ci", data=body, method="POST",
                                          headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(unsigned, timeout=10)
            raise AssertionError("an unsigned request was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
            assert json.loads(exc.read()) == {"error": "authentication failed: missing X-CI-Signature header"}

        deadline = time.monotonic() + 20
        while True:
            runs = json.loads(flowbot("runs", "--json", env=env).stdout)
            if (runs and runs[0]["status"] == "completed") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [r["status"] for r in runs] == ["completed"], runs
        shown = json.loads(flowbot("runs", "show", str(runs[0]["id"]), "--json", env=env).stdout)
        assert shown["context"] == {"deployed": "abc123"}
    finally:
        stop(server)
    assert "hook deploys/status (/hooks/deploys/status) accepts unauthenticated requests (auth=None)" \
        in log.read_text()
