"""Load-time validation of hook stages (plugged into ``engine.loader.STAGE_CHECKS``).

A hook's path, methods, auth and options are checked when workflows load, so a typo fails
``flowbot workflows`` with the file and line of the ``workflow.hook(...)`` call instead of
surfacing as a 404 or an open endpoint in production. Two hooks on one path are refused by the
loader itself (across workflows).
"""

from __future__ import annotations

import re
from typing import Any

from engine.triggers.hooks.auth import HookAuth, SlackAuth, StripeAuth
from engine.workflow import Stage, StageKind

#: Methods a hook may allow (``methods=``).
HOOK_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Keyword options ``workflow.hook`` takes besides path/auth/methods/module.
HOOK_OPTIONS = ("accept", "max_bytes")

_PATH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]+)*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEDIA_RE = re.compile(r"^(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)/(\*|\*?[a-z0-9!#$&^_.+-]+)$")


def check_hook(stage: Stage) -> list[str]:
    """Errors of a hook stage's declaration (none for other kinds of stage)."""
    if stage.kind is not StageKind.HOOK:
        return []
    name = stage.name
    errors: list[str] = []
    path = stage.path or ""
    if not _PATH_RE.match(path) or any(part in (".", "..") for part in path.split("/")):
        errors.append(f'hook "{name}": path "{path}" must be letters, digits, "-", "_", "." or "~" '
                      'in "/"-separated segments (served at /hooks/<path>)')
    if not stage.methods:
        errors.append(f'hook "{name}": methods= must name at least one of {", ".join(HOOK_METHODS)}')
    for method in stage.methods:
        if method not in HOOK_METHODS:
            errors.append(f'hook "{name}": method "{method}" is not one of {", ".join(HOOK_METHODS)}')
    errors.extend(_check_auth(name, stage.auth))
    errors.extend(_check_options(name, stage.options))
    return errors


def _check_auth(name: str, auth: Any) -> list[str]:
    if auth is None:
        return []
    if not isinstance(auth, HookAuth):
        return [f'hook "{name}": auth= must be BearerAuth, HmacAuth, GitHubAuth, StripeAuth or SlackAuth '
                f"(naming the environment variable of the secret), or None; got {auth!r}"]
    errors = []
    env = auth.secret_env
    if not isinstance(env, str) or not _ENV_RE.match(env):
        errors.append(f'hook "{name}": {type(auth).__name__} takes the NAME of the environment variable '
                      f'holding the secret (e.g. "GITHUB_WEBHOOK_SECRET"), not {_redacted(env)}')
    if isinstance(auth, StripeAuth | SlackAuth):
        tolerance = auth.tolerance
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance <= 0:
            errors.append(f'hook "{name}": tolerance must be a positive number of seconds, got {tolerance!r}')
    return errors


def _redacted(value: Any) -> str:
    # The value may be a secret pasted by mistake: never print it whole in logs or CI output.
    if not isinstance(value, str):
        return repr(value)
    return f'"{value[:3]}…" ({len(value)} characters)' if len(value) > 6 else "a value that is not a name"


def _check_options(name: str, options: dict[str, Any]) -> list[str]:
    errors = []
    unknown = sorted(set(options) - set(HOOK_OPTIONS))
    if unknown:
        errors.append(f'hook "{name}": unknown option(s) {", ".join(unknown)} '
                      f'(a hook takes path, auth, methods, module, {", ".join(HOOK_OPTIONS)})')
    accept = options.get("accept")
    if accept is not None:
        items = [accept] if isinstance(accept, str) else accept
        if not isinstance(items, list | tuple) or not items:
            errors.append(f'hook "{name}": accept= must be a media type or a list of them')
        else:
            for item in items:
                if not isinstance(item, str) or not _MEDIA_RE.match(item.strip().lower()):
                    errors.append(f'hook "{name}": accept= entry {item!r} is not a media type '
                                  '(like "application/json", "text/*" or "*/*")')
    max_bytes = options.get("max_bytes")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                  or max_bytes <= 0):
        errors.append(f'hook "{name}": max_bytes must be a positive number of bytes, got {max_bytes!r}')
    return errors


def register_checks() -> None:
    """Plug ``check_hook`` into the loader (once, however often this is called)."""
    from engine.loader import STAGE_CHECKS

    if check_hook not in STAGE_CHECKS:
        STAGE_CHECKS.append(check_hook)
