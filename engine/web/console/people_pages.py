"""The console's pages for people: signing in, the inbox, a task's form, a start form.

A form is answered page by page (``Page(when=...)`` decides the path, as in Slack); the last
page submits through ``engine.people.actions``, so one submission of a task wins whichever edge
it comes from, and a refusal (not yours, already done, invalid) changes nothing.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

from engine.errors import FlowbotError, UnknownStage, UnknownWorkflow
from engine.forms import Approval, ChoiceField, Form, Page
from engine.ops.actor import role_of
from engine.people import actions as people
from engine.people import links, mail
from engine.runtime.app import App
from engine.runtime.runner import task_of
from engine.store import console_queries as q
from engine.store.db import Row
from engine.web.console import acting, formview
from engine.web.console.render import message, page
from engine.web.console.session import sign_in, sign_out, viewer_of
from engine.workflow import Stage, StageKind

routes = web.RouteTableDef()

#: Outbox kind of a sign-in link sent by Slack DM (the Slack app delivers it).
SLACK_SIGNIN = "console.signin"


def app_of(request: web.Request) -> App:
    """The open flowbot serving this request."""
    return request.config_dict[acting.APP_KEY]


def signed_in(request: web.Request) -> tuple[str, str]:
    """The viewer's (person, role); a signed-out visitor goes to the sign-in page first."""
    viewer = viewer_of(request)
    if viewer.person is None:
        if request.query.get("format") == "json":
            raise web.HTTPUnauthorized(text='{"error": "sign in first"}', content_type="application/json")
        raise web.HTTPFound("/console/signin?next=" + quote(request.path_qs, safe=""))
    return viewer.person, viewer.role


def safe_next(value: str | None) -> str:
    # Only paths of the console itself: never an open redirect to another site.
    if value and value.startswith("/console/") and not value.startswith("//"):
        return value
    return "/console/inbox"


# --- signing in --------------------------------------------------------------------------------


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/inbox")


def _channels(app: App) -> str:
    ways = (["by Slack DM"] if app.settings.slack_enabled else []) + (["by email"] if app.settings.mail_enabled else [])
    return " and ".join(ways)


@routes.get("/signin")
async def signin_page(request: web.Request) -> web.Response:
    app = app_of(request)
    return page(request, "signin.html", {"next": safe_next(request.query.get("next")), "channels": _channels(app),
                                         "oidc": app.settings.oidc_enabled, "sent": False})


@routes.post("/signin")
async def signin_send(request: web.Request) -> web.Response:
    app = app_of(request)
    posted = await request.post()
    email = str(posted.get("email") or "").strip().lower()
    context: dict[str, Any] = {"next": safe_next(str(posted.get("next") or "")), "channels": _channels(app),
                               "oidc": app.settings.oidc_enabled, "email": email, "sent": False}
    if not mail.is_email(email) or len(email) > 254:
        return page(request, "signin.html", {**context, "error": "Type your email address."}, status=422)
    limiter = request.config_dict[LIMITS_KEY]
    if not (limiter.allow("ip:" + (request.remote or "")) and limiter.allow("email:" + email)):
        return page(request, "signin.html", {**context, "error": "Too many sign-in attempts: wait a few minutes."},
                    status=429)
    effects: list[tuple[str, dict[str, Any], int | None, str | None]] = []
    if app.settings.mail_enabled:
        effects.append((mail.SIGNIN, {"to": email}, None, None))
    if app.settings.slack_enabled:
        effects.append((SLACK_SIGNIN, {"to": email}, None, None))
    if effects:
        async with app.db.transaction() as tx:
            await app.store.add_effects(tx, effects, app.store.clock())
            await tx.notify()
    # The same answer whether or not the address is known: the page tells nobody who uses flowbot.
    return page(request, "signin.html", {**context, "sent": True, "channel": _channels(app)},
                data={"sent": True})


@routes.get("/link/{token}")
async def link_page(request: web.Request) -> web.Response:
    # Spent only by the POST below: mail scanners that fetch links must not use them up.
    return page(request, "link.html", {}, data={"method": "POST to spend this link"})


@routes.post("/link/{token}")
async def link_spend(request: web.Request) -> web.Response:
    app = app_of(request)
    spent = await links.spend(app.db, request.match_info["token"], app.store.clock())
    if spent is None:
        return message(request, "This link does not work", "It was used already, has expired, or was mistyped. "
                       "Ask for a new one on the sign-in page.", status=410, kind="error", back="/console/signin")
    sign_in(viewer_of(request), spent.person, role_of(spent.person, app.settings.admins, spent.role).value)
    target = f"/console/tasks/{spent.task_id}" if spent.task_id else "/console/inbox"
    raise web.HTTPSeeOther(target)


@routes.post("/signout")
async def signout(request: web.Request) -> web.Response:
    sign_out(viewer_of(request))
    raise web.HTTPSeeOther("/console/signin")


# --- inbox -------------------------------------------------------------------------------------


async def _task_title(app: App, task: Row) -> str:
    try:
        form = await people.load_form(app.store.stage_of(task), task_of(task))
        return form.title
    except (FlowbotError, UnknownWorkflow, UnknownStage):
        return f"{task['workflow']} · {task['stage']}"


@routes.get("/inbox")
async def inbox(request: web.Request) -> web.Response:
    app = app_of(request)
    person, role = signed_in(request)
    names = acting.names_of(person)
    patterns = [{"users": [n]} for n in names] + [{"team": t} for t in await acting.teams_of(app, person)]
    rows = await app.db.fetch_all(q.inbox(len(patterns)), {**{f"p{i}": p for i, p in enumerate(patterns)},
                                                           "names": names, "limit": 200})
    tasks = [{**dict(r), "title": await _task_title(app, r)} for r in rows]
    starts = [{"workflow": s.workflow.name, "stage": s.name, "title": s.workflow.title or s.workflow.name}
              for s in acting.start_stages(app) if await acting.may_start(app, s.workflow, person, role)]
    return page(request, "inbox.html", {"nav": "inbox", "tasks": tasks, "starts": starts})


# --- a task's form -----------------------------------------------------------------------------


async def _open_task(request: web.Request) -> tuple[App, Row, Stage, Form, str, str] | web.Response:
    app = app_of(request)
    person, role = signed_in(request)
    try:
        task_id = int(request.match_info["id"])
    except ValueError:
        return message(request, "No such task", "Task ids are numbers.", status=404, kind="error")
    task, _ = await people.get_task_in_run(app.db, task_id)
    if task is None:
        return message(request, "No such task", f"There is no task {task_id}.", status=404, kind="error")
    if task["kind"] != StageKind.FORM.value:
        raise web.HTTPFound(f"/console/runs/{task['run_id']}")
    if task["status"] != "pending":
        done = await people.check(app.store, task_id, person, acting.ops_of(app).people, task=task)
        closed = formview.refusal(done)
        text = closed[1] if closed else (
            f"{done.by} completed it at {done.at:%Y-%m-%d %H:%M} UTC." if done.by and done.at
            else done.message or f"It is {task['status']}.")
        return message(request, "Nothing left to do", text, status=409, back="/console/inbox", kind="info")
    if not await acting.may_open(app, task, person, role):
        return message(request, "Not yours", "This task is assigned to someone else: you may not act on it.",
                       status=403, kind="error", back="/console/inbox")
    try:
        stage = app.store.stage_of(task)
        form = await people.load_form(stage, task_of(task))
    except (FlowbotError, UnknownWorkflow, UnknownStage) as exc:
        return message(request, "This form cannot open", str(exc), status=409, kind="error")
    return app, task, stage, form, person, role


def _form_page(request: web.Request, form: Form, current: Page, payload: dict[str, Any], answers: dict[str, Any],
               errors: dict[str, str], *, options_url: str, context_line: str, status: int = 200,
               task: Row | None = None, policy: formview.Policy | None = None) -> web.Response:
    approval = isinstance(form, Approval)
    if approval:
        assert isinstance(form, Approval)
        items = formview.approval_items(form, payload, answers, errors)
    else:
        items = formview.page_items(form, current, payload, answers, errors)
    earlier = {k: v for k, v in answers.items() if k not in {f.name for f in current.inputs}}
    context = {
        "title": current.title or form.title, "items": items, "errors": errors, "page": current.name,
        "page_number": form.pages.index(current) + 1, "page_count": len(form.pages), "page_title": current.title,
        "carried": json.dumps(earlier), "approval": approval, "submit_label": form.submit_label if
        form.next_page(current, answers) is None else form.next_label,
        "approve_label": getattr(form, "approve_label", ""), "decline_label": getattr(form, "decline_label", ""),
        "options_url": options_url, "context_line": context_line,
        "task_id": task["id"] if task else None,
        "team": bool(task and (task.get("assignee") or {}).get("team") and not task["assignee"].get("claimed_by")
                     and not (isinstance(form, Approval) and form.quorum)),
        "policy": policy,
    }
    data = {"title": context["title"], "page": current.name, "errors": errors,
            "fields": [{"name": i.name, "kind": i.kind, "label": i.label, "required": i.required, "value": i.value,
                        "error": i.error} for i in items if i.name]}
    if policy is not None:
        data["policy"] = policy.as_json()
    return page(request, "form.html", context, data=data, status=status)


def _answers_of(form: Form, current: Page, posted: Any) -> dict[str, Any]:
    answers = formview.carried(posted)
    if isinstance(form, Approval):
        comment = str(posted.get("comment") or "")
        return {"decision": str(posted.get(formview.DECISION_FIELD) or ""), "comment": comment.strip() or None}
    answers.update(formview.read_page(current, posted))
    return answers


async def _walk(request: web.Request, form: Form, payload: dict[str, Any], options_url: str,
                context_line: str) -> tuple[dict[str, Any], web.Response | None]:
    """Read a posted page: its errors or the next page (a response), or the whole answers (None)."""
    posted = await request.post()
    try:
        current = form.page(str(posted.get(formview.PAGE_FIELD) or form.pages[0].name))
    except FlowbotError:
        current = form.first_page()
    answers = _answers_of(form, current, posted)
    errors = form.validate(answers, page=current)
    if errors:
        return answers, _form_page(request, form, current, payload, answers, errors, options_url=options_url,
                                   context_line=context_line, status=422)
    following = form.next_page(current, answers)
    if following is not None:
        return answers, _form_page(request, form, following, payload, answers, {}, options_url=options_url,
                                   context_line=context_line)
    return answers, None


def _context_line(task: Row) -> str:
    return f"{task['workflow']} · {task['stage']} · run {str(task['run_id'])[:8]}"


@routes.get("/tasks/{id:\\d+}")
async def task_form(request: web.Request) -> web.Response:
    opened = await _open_task(request)
    if isinstance(opened, web.Response):
        return opened
    app, task, _stage, form, _p, _r = opened
    return _form_page(request, form, form.first_page(), task["payload"], {}, {},
                      options_url=f"/console/tasks/{task['id']}/options", context_line=_context_line(task), task=task,
                      policy=await formview.policy_of(app.db, task, form))


@routes.post("/tasks/{id:\\d+}")
async def task_submit(request: web.Request) -> web.Response:
    opened = await _open_task(request)
    if isinstance(opened, web.Response):
        return opened
    app, task, _stage, form, person, role = opened
    answers, response = await _walk(request, form, task["payload"], f"/console/tasks/{task['id']}/options",
                                    _context_line(task))
    if response is not None:
        return response
    if isinstance(form, Approval):
        answers = form.answers(answers["decision"], answers.get("comment"))
    result = await acting.submit(app, task, answers, person, role, form)
    return _outcome(request, form, task["payload"], answers, result, _context_line(task),
                    f"/console/tasks/{task['id']}/options")


def _outcome(request: web.Request, form: Form, payload: dict[str, Any], answers: dict[str, Any],
             result: people.Result, context_line: str, options_url: str) -> web.Response:
    if result.ok:
        what = "Approved" if answers.get("decision") == "approved" else (
            "Declined" if answers.get("decision") == "declined" else "Sent")
        text = formview.recorded_text(result) if result.status == people.RECORDED else "Your answer is recorded."
        resp = message(request, f"{what}. Thank you.", text, back="/console/inbox", kind="ok")
        if result.run_id:
            resp.headers["X-Flowbot-Run"] = result.run_id
        return resp
    if result.status == people.INVALID:
        first = next((form.page_of(name) for name in result.errors if name in {f.name for f in form.fields()}),
                     form.first_page())
        return _form_page(request, form, first, payload, answers, result.errors, options_url=options_url,
                          context_line=context_line, status=422)
    if (explained := formview.refusal(result)) is not None:
        title, text, status = explained
        return message(request, title, text, status=status, back="/console/inbox", kind="error")
    if result.status == people.ALREADY:
        return message(request, "Someone was faster", f"{result.by} completed this task first; your answer was "
                       "not recorded.", status=409, back="/console/inbox")
    if result.status == people.FORBIDDEN:
        return message(request, "Not yours", "You may not act on this task.", status=403, kind="error")
    return message(request, "Not recorded", result.message or "The task is not open.", status=409, kind="error")


@routes.get("/tasks/{id:\\d+}/options/{field}")
async def task_options(request: web.Request) -> web.Response:
    opened = await _open_task(request)
    if isinstance(opened, web.Response):
        return opened
    _app, task, _stage, form, _p, _r = opened
    return _options(form, request.match_info["field"], request.query.get("q", ""), task["payload"])


def _options(form: Form, name: str, query: str, payload: dict[str, Any]) -> web.Response:
    try:
        f = form.field(name)
    except FlowbotError:
        return web.json_response({"error": f"no field {name}"}, status=404)
    if not isinstance(f, ChoiceField):
        return web.json_response({"error": f"{name} has no options"}, status=404)
    try:
        options = f.load_options(query[:200], payload)[:100]
    except Exception as exc:  # an author's loader failing must not break the page
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=502)
    return web.json_response([{"value": o.value, "label": o.label} for o in options])


# --- start forms -------------------------------------------------------------------------------


async def _open_start(request: web.Request) -> tuple[App, Stage, Form, str, str] | web.Response:
    app = app_of(request)
    person, role = signed_in(request)
    try:
        wf = app.registry.get(request.match_info["workflow"])
        stage = wf.stage(request.match_info["stage"])
    except (UnknownWorkflow, UnknownStage):
        return message(request, "No such form", "There is no such start form.", status=404, kind="error")
    if stage.kind is not StageKind.FORM or not stage.is_start:
        return message(request, "No such form", f"{wf.name}/{stage.name} is not a start form.", status=404,
                       kind="error")
    if not await acting.may_start(app, wf, person, role):
        return message(request, "Not allowed", f"You may not start {wf.title or wf.name}.", status=403, kind="error")
    form = await people.load_form(stage, task_of({"id": None, "type": "start", "payload": {}, "run_id": None,
                                                  "stage": stage.name}))
    return app, stage, form, person, role


@routes.get("/start/{workflow}/{stage}")
async def start_form(request: web.Request) -> web.Response:
    opened = await _open_start(request)
    if isinstance(opened, web.Response):
        return opened
    _app, stage, form, _person, _role = opened
    return _form_page(request, form, form.first_page(), {}, {}, {}, options_url=request.path + "/options",
                      context_line=f"Starts a run of {stage.workflow.title or stage.workflow.name}")


@routes.post("/start/{workflow}/{stage}")
async def start_submit(request: web.Request) -> web.Response:
    opened = await _open_start(request)
    if isinstance(opened, web.Response):
        return opened
    app, stage, form, person, role = opened
    line = f"Starts a run of {stage.workflow.title or stage.workflow.name}"
    answers, response = await _walk(request, form, {}, request.path + "/options", line)
    if response is not None:
        return response
    result = await acting.start(app, stage, answers, person, role, form)
    if result.ok and result.run_id:
        raise web.HTTPSeeOther(f"/console/runs/{result.run_id}")
    return _outcome(request, form, {}, answers, result, line, request.path + "/options")


@routes.get("/start/{workflow}/{stage}/options/{field}")
async def start_options(request: web.Request) -> web.Response:
    opened = await _open_start(request)
    if isinstance(opened, web.Response):
        return opened
    return _options(opened[2], request.match_info["field"], request.query.get("q", ""), {})


LIMITS_KEY: web.AppKey[Any] = web.AppKey("console.limits", object)
