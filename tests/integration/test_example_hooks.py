"""The shipped expense hook (stages/expense/request.py) over real HTTP, as a sender meets it.

It teaches the habits a hook should have: a body that is not a claim is a 400, missing fields a
422 naming each one, an accepted claim answers with the run it started, and a claim too large to
be a task is a 413 (flowbot refuses the send; nothing is started).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support import ROOT, scalar

from engine.loader import load_workflows
from engine.runtime.app import App
from engine.settings import Settings
from engine.store.db import Database
from engine.store.tasks import Store
from engine.web.server import build_http_app

TOKEN = "expense-hook-token"
PAYLOAD_LIMIT = 4096
CLAIM = {"employee": "Ann", "amount": 42.5, "currency": "EUR", "description": "Taxi",
         "manager_email": "bob@example.com"}


class Sender:
    def __init__(self, url: str, http: aiohttp.ClientSession, store: Store) -> None:
        self.url, self.http, self.store = url, http, store

    async def post(self, body: bytes, content_type: str | None = "application/json") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if content_type:
            headers["Content-Type"] = content_type
        async with self.http.post(f"{self.url}/hooks/expense", data=body, headers=headers) as resp:
            return resp.status, json.loads(await resp.read())

    async def runs(self) -> int:
        return int(await scalar(self.store, "SELECT count(*) FROM runs"))


@pytest.fixture
async def sender(db: Database, database_url: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sender]:
    monkeypatch.setenv("EXPENSE_HOOK_TOKEN", TOKEN)
    stages = tmp_path / "stages"
    shutil.copytree(ROOT / "stages" / "expense", stages / "expense", ignore=shutil.ignore_patterns("__pycache__"))
    registry = load_workflows(stages)
    store = Store(db, registry)
    settings = Settings(database_url=database_url, home=tmp_path / "home", api_token="t",
                        max_payload_bytes=PAYLOAD_LIMIT)
    runner = web.AppRunner(build_http_app(App(settings=settings, db=db, registry=registry, store=store,
                                              database_url=database_url)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    async with aiohttp.ClientSession() as http:
        yield Sender(f"http://127.0.0.1:{runner.addresses[0][1]}", http, store)
    await runner.cleanup()


async def test_an_accepted_claim_answers_with_the_run_it_started(sender: Sender) -> None:
    status, body = await sender.post(json.dumps(CLAIM).encode())
    assert status == 200 and body["ok"] is True
    [run_id] = body["run_ids"]
    report = await sender.store.report(run_id)
    assert report is not None and report["workflow"] == "expense"
    assert report["steps"][0]["stage"] == "review" and report["steps"][0]["payload"]["amount"] == 42.5


async def test_a_form_body_is_a_claim_too(sender: Sender) -> None:
    body = b"employee=Ann&amount=12&description=Lunch&manager_email=bob%40example.com"
    status, answer = await sender.post(body, "application/x-www-form-urlencoded")
    assert status == 200 and len(answer["run_ids"]) == 1


@pytest.mark.parametrize(("body", "content_type"), [
    (b"", None), (b"", "application/json"), (b"hello", "text/plain"), (b'"a string"', "application/json"),
    (b"[1, 2]", "application/json"),
])
async def test_a_body_that_is_not_a_claim_is_a_400_saying_what_to_send(sender: Sender, body: bytes,
                                                                      content_type: str | None) -> None:
    status, answer = await sender.post(body, content_type)
    assert status == 400, answer
    assert answer["error"].startswith("send the claim as a JSON object")
    assert await sender.runs() == 0


async def test_missing_and_invalid_fields_are_a_422_naming_each(sender: Sender) -> None:
    status, answer = await sender.post(json.dumps({"employee": "Ann", "amount": "lots",
                                                   "manager_email": "bob"}).encode())
    assert status == 422
    assert answer == {"error": "the claim is incomplete",
                      "errors": {"description": "required", "amount": "must be a number above 0",
                                 "manager_email": "must be an email address"}}
    assert await sender.runs() == 0


async def test_a_claim_too_large_for_a_task_is_a_413_and_starts_nothing(sender: Sender) -> None:
    status, answer = await sender.post(json.dumps({**CLAIM, "description": "x" * PAYLOAD_LIMIT}).encode())
    assert status == 413
    assert answer["error"].startswith("the request does not make a valid task: expense/request: payload is ")
    assert f"over the {PAYLOAD_LIMIT}-byte limit" in answer["error"]
    assert await sender.runs() == 0
