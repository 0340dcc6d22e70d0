"""HTTP hooks: `POST /hooks/<path>` starts runs; per-hook authentication lives in `auth`."""

from __future__ import annotations

from engine.hooks.auth import (
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

__all__ = [
    "BearerAuth",
    "GitHubAuth",
    "HmacAuth",
    "HookAuth",
    "HookAuthError",
    "HookConfigError",
    "SlackAuth",
    "StripeAuth",
    "sign_github",
    "sign_hmac",
    "sign_slack",
    "sign_stripe",
]
