"""What operators do from the console's pages: start a run with a payload, fire a job now.

Each is a POST carrying the session's CSRF token; a refusal changes nothing and says why.
"""

from __future__ import annotations

import json

from aiohttp import web

from engine.context import check_payload
from engine.errors import FlowbotError, UnknownWorkflow
from engine.triggers.jobs.firing import find_job, fire
from engine.web.console.ops_pages import admin_only
from engine.web.console.people_pages import app_of, signed_in
from engine.web.console.render import message
from engine.web.console.session import viewer_of

routes = web.RouteTableDef()

@routes.post("/workflows/{name}/runs")
async def start_with_payload(request: web.Request) -> web.Response:
    """Start a run at a script or form start stage with a JSON payload (admins)."""
    app = app_of(request)
    signed_in(request)
    refused = admin_only(request)
    if refused:
        return refused
    try:
        wf = app.registry.get(request.match_info["name"])
    except UnknownWorkflow as exc:
        return message(request, "No such workflow", str(exc), status=404, kind="error")
    posted = await request.post()
    stages = {s.name: s for s in wf.start_stages()}
    stage = stages.get(str(posted.get("stage") or ""))
    if stage is None:
        return message(request, "No such start stage", "Pick one of the workflow's start stages.", status=422,
                       kind="error", back=f"/console/workflows/{wf.name}")
    try:
        payload = check_payload(json.loads(str(posted.get("payload") or "{}")),
                                limit=app.settings.max_payload_bytes, where="payload")
    except (json.JSONDecodeError, FlowbotError) as exc:
        return message(request, "Not started", f"The payload must be a JSON object: {exc}", status=422,
                       kind="error", back=f"/console/workflows/{wf.name}")
    viewer = viewer_of(request)
    run_id, _ = await app.store.start_run(stage, payload, trigger={"kind": "web", "user": viewer.person,
                                                                   "stage": stage.name})
    raise web.HTTPSeeOther(f"/console/runs/{run_id}")


@routes.post("/workflows/{name}/jobs/{stage}/fire")
async def fire_job(request: web.Request) -> web.Response:
    """Fire a job now, as its schedule would (admins)."""
    app = app_of(request)
    signed_in(request)
    refused = admin_only(request)
    if refused:
        return refused
    try:
        job = find_job(app.registry, f"{request.match_info['name']}/{request.match_info['stage']}")
    except FlowbotError as exc:
        return message(request, "No such job", str(exc), status=404, kind="error")
    result = await fire(app.store, job, app.store.clock(), manual=True,
                        max_payload_bytes=app.settings.max_payload_bytes)
    text = (f"{job.key}: {result.status}, {result.runs_created} run(s) started"
            + (f"; {result.error}" if result.error else ""))
    return message(request, "Job fired" if result.status == "fired" else "Job did not fire", text,
                   status=200 if result.status == "fired" else 409,
                   back=f"/console/workflows/{job.stage.workflow.name}")
