"""Hook authentication: bearer tokens and HMAC signatures, with the GitHub/Stripe/Slack presets."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from engine.triggers.hooks import (
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

NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
SECRET = "s3cr3t-from-the-environment"
BODY = b'{"id": "evt_1", "event_id": "Ev1", "amount": 4200}'


def reason(auth: HookAuth, headers: dict[str, str], body: bytes, now: float = NOW) -> str:
    with pytest.raises(HookAuthError) as raised:
        auth.verify(headers, body, now=now)
    return raised.value.reason


@dataclass(frozen=True)
class Preset:
    """One auth scheme under test: how to build it and sign for it."""

    name: str
    auth: HookAuth
    sign: Callable[[str, bytes, int], dict[str, str]]
    signature_header: str
    timestamped: bool


PRESETS = [
    Preset(
        "bearer",
        BearerAuth("HOOK_SECRET"),
        lambda secret, body, ts: {"Authorization": f"Bearer {secret}"},
        "Authorization",
        timestamped=False,
    ),
    Preset(
        "hmac",
        HmacAuth("HOOK_SECRET"),
        lambda secret, body, ts: sign_hmac(secret, body),
        "X-Signature",
        timestamped=False,
    ),
    Preset(
        "github",
        GitHubAuth("HOOK_SECRET"),
        lambda secret, body, ts: sign_github(secret, body),
        "X-Hub-Signature-256",
        timestamped=False,
    ),
    Preset("stripe", StripeAuth("HOOK_SECRET"), sign_stripe, "Stripe-Signature", timestamped=True),
    Preset("slack", SlackAuth("HOOK_SECRET"), sign_slack, "X-Slack-Signature", timestamped=True),
]
SIGNED = [p for p in PRESETS if p.name != "bearer"]
TIMESTAMPED = [p for p in PRESETS if p.timestamped]


@pytest.fixture(autouse=True)
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)


# --- every preset: valid, wrong secret, tampered body, stale, missing header, missing env ---------


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_a_correctly_signed_request_passes(preset: Preset) -> None:
    preset.auth.verify(preset.sign(SECRET, BODY, int(NOW)), BODY, now=NOW)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_a_request_signed_with_another_secret_is_refused(preset: Preset) -> None:
    headers = preset.sign("not-the-secret", BODY, int(NOW))
    expected = "bearer token mismatch" if preset.name == "bearer" else "signature mismatch"
    assert reason(preset.auth, headers, BODY) == expected


@pytest.mark.parametrize("preset", SIGNED, ids=lambda p: p.name)
def test_a_tampered_body_is_refused(preset: Preset) -> None:
    headers = preset.sign(SECRET, BODY, int(NOW))
    assert reason(preset.auth, headers, BODY.replace(b"4200", b"9999")) == "signature mismatch"


@pytest.mark.parametrize("preset", TIMESTAMPED, ids=lambda p: p.name)
def test_a_stale_timestamp_is_refused_even_with_a_valid_signature(preset: Preset) -> None:
    headers = preset.sign(SECRET, BODY, int(NOW) - 301)
    assert reason(preset.auth, headers, BODY) == "timestamp outside tolerance (301 s old)"


@pytest.mark.parametrize("preset", TIMESTAMPED, ids=lambda p: p.name)
def test_a_timestamp_within_tolerance_passes_and_one_far_ahead_is_refused(preset: Preset) -> None:
    preset.auth.verify(preset.sign(SECRET, BODY, int(NOW) - 300), BODY, now=NOW)
    preset.auth.verify(preset.sign(SECRET, BODY, int(NOW) + 300), BODY, now=NOW)
    headers = preset.sign(SECRET, BODY, int(NOW) + 600)
    assert reason(preset.auth, headers, BODY) == "timestamp outside tolerance (600 s in the future)"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_a_missing_signature_header_is_refused(preset: Preset) -> None:
    headers = preset.sign(SECRET, BODY, int(NOW))
    del headers[preset.signature_header]
    assert reason(preset.auth, headers, BODY) == f"missing {preset.signature_header} header"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_an_unset_secret_env_fails_verification_with_its_name(
    preset: Preset, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = preset.sign(SECRET, BODY, int(NOW))
    assert preset.auth.missing_secret() is None
    monkeypatch.delenv("HOOK_SECRET")
    assert preset.auth.missing_secret() == "HOOK_SECRET"
    assert reason(preset.auth, headers, BODY) == "secret env HOOK_SECRET is not set"
    monkeypatch.setenv("HOOK_SECRET", "")  # empty counts as unset: never sign with ""
    assert preset.auth.missing_secret() == "HOOK_SECRET"
    assert reason(preset.auth, headers, BODY) == "secret env HOOK_SECRET is not set"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_the_secret_is_read_at_verify_time_so_rotation_needs_no_reload(
    preset: Preset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "rotated")
    preset.auth.verify(preset.sign("rotated", BODY, int(NOW)), BODY, now=NOW)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_header_names_match_case_insensitively_in_any_mapping(preset: Preset) -> None:
    headers = preset.sign(SECRET, BODY, int(NOW))
    preset.auth.verify({k.lower(): v for k, v in headers.items()}, BODY, now=NOW)
    preset.auth.verify({k.upper(): v for k, v in headers.items()}, BODY, now=NOW)
    preset.auth.verify(CIMultiDictProxy(CIMultiDict(headers)), BODY, now=NOW)


# --- GitHub -------------------------------------------------------------------------------------


def test_githubs_documented_test_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    # docs.github.com, "Validating webhook deliveries": testing the webhook payload validation.
    secret, payload = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_github(secret, payload) == {"X-Hub-Signature-256": expected}
    auth = GitHubAuth("GITHUB_SECRET")
    monkeypatch.setenv("GITHUB_SECRET", secret)
    auth.verify({"X-Hub-Signature-256": expected}, payload, now=NOW)
    monkeypatch.setenv("GITHUB_SECRET", "another secret")
    assert reason(auth, {"X-Hub-Signature-256": expected}, payload) == "signature mismatch"


PUSH_BODY = json.dumps(
    {
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "repository": {
            "id": 1296269,
            "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
            "name": "Hello-World",
            "full_name": "octocat/Hello-World",
            "private": False,
            "owner": {"name": "octocat", "email": "octocat@github.com", "login": "octocat"},
            "html_url": "https://github.com/octocat/Hello-World",
            "default_branch": "main",
        },
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
        "sender": {"login": "octocat", "id": 1, "type": "User", "site_admin": False},
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": "https://github.com/octocat/Hello-World/compare/6113728f27ae...0d1a26e67d8f",
        "commits": [
            {
                "id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
                "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
                "distinct": True,
                "message": "Update README.md\n\nWith a second paragraph, and ünïcödé.",
                "timestamp": "2026-01-01T00:59:00+01:00",
                "url": "https://github.com/octocat/Hello-World/commit/0d1a26e67d8f",
                "author": {"name": "Mona Octocat", "email": "mona@github.com", "username": "mona"},
                "committer": {
                    "name": "GitHub",
                    "email": "noreply@github.com",
                    "username": "web-flow",
                },
                "added": [],
                "removed": [],
                "modified": ["README.md"],
            }
        ],
        "head_commit": None,
    },
    indent=2,  # GitHub pretty-prints; the signature covers these exact bytes
    ensure_ascii=False,
).encode()


def github_push_headers(secret: str, body: bytes) -> dict[str, str]:
    """The headers of a GitHub push delivery, signed with `secret`."""
    return {
        "Request-Method": "POST",
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/f1a2b3c",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "push",
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-ID": "79929171",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "Content-Length": str(len(body)),
    }


def test_a_real_github_push_delivery_verifies_and_names_its_delivery() -> None:
    auth = GitHubAuth("HOOK_SECRET")
    headers = github_push_headers(SECRET, PUSH_BODY)
    auth.verify(headers, PUSH_BODY, now=NOW)
    assert auth.delivery_id(headers, PUSH_BODY) == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    # A proxy re-serialising the JSON (same data, other bytes) breaks the signature.
    reserialised = json.dumps(json.loads(PUSH_BODY)).encode()
    assert reason(auth, headers, reserialised) == "signature mismatch"


def test_a_github_signature_without_its_prefix_is_refused() -> None:
    headers = {"X-Hub-Signature-256": sign_github(SECRET, BODY)["X-Hub-Signature-256"][7:]}
    assert reason(GitHubAuth("HOOK_SECRET"), headers, BODY) == (
        'X-Hub-Signature-256 header does not start with "sha256="'
    )


# --- Stripe -------------------------------------------------------------------------------------


def test_stripe_accepts_any_of_several_v1_signatures_during_secret_rolling() -> None:
    signed = sign_stripe(SECRET, BODY, int(NOW))["Stripe-Signature"]
    t, v1 = signed.split(",")
    old = sign_stripe("old-secret", BODY, int(NOW))["Stripe-Signature"].split(",")[1]
    header = f"{t},{old},{v1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    StripeAuth("HOOK_SECRET").verify({"Stripe-Signature": header}, BODY, now=NOW)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("v1=abc", "Stripe-Signature header has no valid timestamp (t=)"),
        ("t=soon,v1=abc", "Stripe-Signature header has no valid timestamp (t=)"),
        (f"t={int(NOW)}", "Stripe-Signature header has no v1 signature"),
        (f"t={int(NOW)},v0=abc", "Stripe-Signature header has no v1 signature"),
    ],
)
def test_a_malformed_stripe_header_is_refused(header: str, expected: str) -> None:
    assert reason(StripeAuth("HOOK_SECRET"), {"Stripe-Signature": header}, BODY) == expected


def test_stripe_tolerance_is_configurable() -> None:
    auth = StripeAuth("HOOK_SECRET", tolerance=60)
    assert reason(auth, sign_stripe(SECRET, BODY, int(NOW) - 61), BODY) == (
        "timestamp outside tolerance (61 s old)"
    )


# --- Slack --------------------------------------------------------------------------------------

SLACK_DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_DOC_TIMESTAMP = 1531420618
SLACK_DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    b"%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_slacks_documented_example(monkeypatch: pytest.MonkeyPatch) -> None:
    # api.slack.com, "Verifying requests from Slack": the slash command walk-through.
    assert sign_slack(SLACK_DOC_SECRET, SLACK_DOC_BODY, SLACK_DOC_TIMESTAMP) == {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": SLACK_DOC_SIGNATURE,
    }
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SLACK_DOC_SECRET)
    auth = SlackAuth("SLACK_SIGNING_SECRET")
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": SLACK_DOC_SIGNATURE,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    auth.verify(headers, SLACK_DOC_BODY, now=SLACK_DOC_TIMESTAMP + 60)
    # The same request replayed now, years later, is refused.
    assert reason(auth, headers, SLACK_DOC_BODY).startswith("timestamp outside tolerance (")
    assert auth.delivery_id(headers, SLACK_DOC_BODY) is None  # slash commands carry no id


def test_slack_needs_its_timestamp_header() -> None:
    headers = sign_slack(SECRET, BODY, int(NOW))
    del headers["X-Slack-Request-Timestamp"]
    assert reason(SlackAuth("HOOK_SECRET"), headers, BODY) == (
        "missing X-Slack-Request-Timestamp header"
    )
    headers["X-Slack-Request-Timestamp"] = "yesterday"
    assert reason(SlackAuth("HOOK_SECRET"), headers, BODY) == (
        "X-Slack-Request-Timestamp header is not a Unix timestamp"
    )


# --- bearer and generic HMAC --------------------------------------------------------------------


@pytest.mark.parametrize("value", [f"Basic {SECRET}", SECRET, "Bearer", "Bearer   "])
def test_an_authorization_header_that_is_not_a_bearer_token_is_refused(value: str) -> None:
    assert reason(BearerAuth("HOOK_SECRET"), {"Authorization": value}, BODY) == (
        "Authorization header is not a bearer token"
    )


def test_the_bearer_scheme_name_is_case_insensitive() -> None:
    BearerAuth("HOOK_SECRET").verify({"authorization": f"bearer {SECRET}"}, b"", now=NOW)


def test_hmac_with_its_own_header_prefix_and_algorithm() -> None:
    auth = HmacAuth("HOOK_SECRET", header="X-Acme-Signature", prefix="", algorithm="sha512")
    headers = sign_hmac(SECRET, BODY, header="X-Acme-Signature", prefix="", algorithm="sha512")
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha512).hexdigest()
    assert headers == {"X-Acme-Signature": expected}
    auth.verify(headers, BODY, now=NOW)
    auth.verify({"x-acme-signature": expected.upper()}, BODY, now=NOW)  # hex case-insensitive
    assert reason(auth, sign_hmac(SECRET, BODY, header="X-Acme-Signature"), BODY) == (
        "signature mismatch"  # a sha256 signature is not a sha512 one
    )


def test_an_unknown_hmac_algorithm_is_refused_when_declared() -> None:
    with pytest.raises(HookConfigError, match='unknown HMAC algorithm "md5"'):
        HmacAuth("HOOK_SECRET", algorithm="md5")


def test_a_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    headers = {"X-Signature": "sha256=ünïcödé"}
    assert reason(HmacAuth("HOOK_SECRET"), headers, BODY) == "signature mismatch"


# --- delivery ids and descriptions --------------------------------------------------------------


def test_delivery_ids_prefer_the_senders_own_then_idempotency_key() -> None:
    key = {"idempotency-key": "order-17"}
    assert BearerAuth("S").delivery_id(key, BODY) == "order-17"
    assert BearerAuth("S").delivery_id({}, BODY) is None
    assert HmacAuth("S").delivery_id({"Idempotency-Key": "order-17"}, BODY) == "order-17"
    custom = HmacAuth("S", delivery_header="X-Acme-Delivery")
    assert custom.delivery_id({"x-acme-delivery": "d-1", **key}, BODY) == "d-1"
    assert custom.delivery_id(key, BODY) == "order-17"
    assert GitHubAuth("S").delivery_id({"X-GitHub-Delivery": "uuid-1", **key}, BODY) == "uuid-1"
    assert GitHubAuth("S").delivery_id(key, BODY) == "order-17"
    # Stripe retries keep the event id; Slack retries keep the event_id.
    assert StripeAuth("S").delivery_id(key, BODY) == "evt_1"
    assert StripeAuth("S").delivery_id(key, b"not json") == "order-17"
    assert StripeAuth("S").delivery_id({}, b"[1, 2]") is None
    assert SlackAuth("S").delivery_id(key, BODY) == "Ev1"
    assert SlackAuth("S").delivery_id({}, b"payload=%7B%7D") is None


def test_describe_names_the_scheme_header_and_secret_variable() -> None:
    assert GitHubAuth("GITHUB_SECRET").describe() == (
        "GitHub signature (X-Hub-Signature-256, secret from $GITHUB_SECRET)"
    )
    assert BearerAuth("DEPLOY_TOKEN").describe() == (
        "bearer token (Authorization: Bearer, secret from $DEPLOY_TOKEN)"
    )
    assert HmacAuth("ACME_SECRET", header="X-Acme-Signature").describe() == (
        "HMAC-SHA256 signature (X-Acme-Signature, secret from $ACME_SECRET)"
    )
    assert StripeAuth("STRIPE_WEBHOOK_SECRET").describe() == (
        "Stripe signature (Stripe-Signature, 300 s tolerance, secret from $STRIPE_WEBHOOK_SECRET)"
    )
    assert SlackAuth("SLACK_SIGNING_SECRET", tolerance=60).describe() == (
        "Slack signature (X-Slack-Signature, 60 s tolerance, secret from $SLACK_SIGNING_SECRET)"
    )


def test_auth_declarations_are_frozen_values() -> None:
    assert GitHubAuth("A") == GitHubAuth("A")
    assert hash(StripeAuth("A")) == hash(StripeAuth("A"))
    with pytest.raises(AttributeError):
        GitHubAuth("A").secret_env = "B"  # type: ignore[misc]
    with pytest.raises(TypeError):
        HookAuth("A")  # type: ignore[abstract]
