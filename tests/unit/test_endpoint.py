"""bot.endpoint.parse_body: Slack's request bodies parsed as Bolt parses them (with yarl's C
unquoter instead of urllib's)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from slack_bolt.request.internals import parse_body as bolt_parse_body

from bot.endpoint import parse_body

FORM = "application/x-www-form-urlencoded"

BODIES = [
    (urlencode({"payload": json.dumps({"type": "block_actions", "actions": [{"value": "a+b %2B &=?/ ✓ 😀"}],
                                       "text": "100% \"quoted\"\nnext line"})}), FORM),
    (urlencode({"payload": json.dumps({"type": "view_submission", "view": {"private_metadata": "s-1",
                                       "state": {"values": {"f": {"f": {"value": "x&y=z"}}}}}})}), FORM),
    (urlencode({"token": "t", "team_id": "T1", "command": "/flowbot", "text": "start expense amount=12 note=a+b",
                "trigger_id": "1.2.3", "response_url": "https://hooks.slack.com/commands/1/2"}), FORM),
    ("ssl_check=1&token=abc", FORM),
    ("a=&b=1&c", FORM),
    ("a=1&a=2", FORM),  # a repeated field: the last one counts, as with urllib
    (json.dumps({"type": "event_callback", "event": {"type": "app_home_opened", "user": "U1"}}), "application/json"),
    (json.dumps({"type": "url_verification", "challenge": "c"}), None),
    ("", FORM),
]


@pytest.mark.parametrize(("raw", "content_type"), BODIES)
def test_bodies_parse_as_bolt_parses_them(raw: str, content_type: str | None) -> None:
    assert parse_body(raw, content_type) == bolt_parse_body(raw, content_type)


@pytest.mark.parametrize("raw", ["payload=%7Bnot+json", "payload=%5B1%5D", "payload=2"])
def test_a_payload_that_is_not_a_json_object_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_body(raw, FORM)


def test_a_json_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_body("[1, 2]", "application/json")
