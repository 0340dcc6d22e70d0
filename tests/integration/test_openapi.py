"""``GET /api/openapi.json``: an OpenAPI 3.1 document naming every ``/api`` route. Every answer
the API tests get (tests/integration/test_api.py, test_ops_api.py) is checked against it with
openapi-core as it arrives (``tests.opsworld.conforms``); here, the document itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse

from engine.web import api
from engine.web.openapi import document
from tests.opsworld import conforms, served, settings_for


@pytest.fixture
async def world(database_url: str, tmp_path: Path):
    async with served(settings_for(database_url, tmp_path)) as found:
        yield found


async def test_the_document_is_served_without_a_token_and_is_valid_openapi_3_1(world) -> None:
    _, _, client = world
    async with client.session.get(client.base + "/api/openapi.json") as resp:
        assert resp.status == 200
        served_doc = await resp.json()
    assert served_doc == json.loads(json.dumps(document()))
    assert served_doc["openapi"] == "3.1.0"
    OpenAPI.from_dict(served_doc)  # raises on an invalid document


async def test_every_api_route_is_in_the_document_and_every_documented_route_exists(world) -> None:
    app, _, _ = world
    sub = api.build(app)
    routes = {(r.method.lower(), re.sub(r"\{(\w+)\}", r"{\1}", r.resource.canonical))
              for r in sub.router.routes() if r.method != "HEAD" and r.resource is not None}
    documented = {(method, path) for path, ops in document()["paths"].items() for method in ops}
    assert routes == documented


async def test_an_answer_that_drifts_from_the_document_fails_the_check(world) -> None:
    _, _, client = world
    status, report = await client.call("POST", "/api/workflows/desk/runs", {"payload": {}})
    status, report = await client.call("GET", f"/api/runs/{report['run_id']}")
    assert status == 200
    del report["audit"]
    with pytest.raises(OpenAPIError):
        conforms(client.base, "GET", f"/api/runs/{report['id']}", "", 200, json.dumps(report).encode())
    spec = OpenAPI.from_dict({**document(), "servers": [{"url": client.base + "/api"}]})
    spec.validate_response(MockRequest(client.base, "get", "/api/me"),
                           MockResponse(b'{"person": "a@example.com", "role": "admin"}'))
    with pytest.raises(OpenAPIError):
        spec.validate_response(MockRequest(client.base, "get", "/api/me"),
                               MockResponse(b'{"person": "a@example.com", "role": "owner"}'))
