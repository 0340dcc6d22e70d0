"""HTTP hooks: `POST /hooks/<path>` starts runs; per-hook authentication lives in `auth`.

Importing this package plugs the hook declaration checks into the workflow loader
(``engine.triggers.hooks.checks``). Serving lives in ``engine.triggers.hooks.http``, ``flowbot hooks`` in
``engine.cli.hooks``; neither is imported here.
"""

from __future__ import annotations

from engine.triggers.hooks.auth import (
    BearerAuth,
    GitHubAuth,
    HmacAuth,
    HookAuth,
    HookAuthError,
    HookConfigError,
    SlackAuth,
    StripeAuth,
    sign_github,
    sign_hmac,
    sign_slack,
    sign_stripe,
)
from engine.triggers.hooks.checks import register_checks
from engine.triggers.hooks.request import HookFile, HookRequest, HookResponse

register_checks()

__all__ = [
    "BearerAuth",
    "GitHubAuth",
    "HmacAuth",
    "HookAuth",
    "HookAuthError",
    "HookConfigError",
    "HookFile",
    "HookRequest",
    "HookResponse",
    "SlackAuth",
    "StripeAuth",
    "sign_github",
    "sign_hmac",
    "sign_slack",
    "sign_stripe",
]
