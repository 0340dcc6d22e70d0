"""tests.fakeslack: the fake Slack Web API answers slack_sdk like Slack and records calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakeslack import FakeSlack

TOKEN = "xoxb-test-token"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(users={"anna@example.com": "U0ANNA"}) as fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.url)


async def test_the_base_url_points_a_slack_client_at_the_fake(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    assert slack.url.startswith("http://127.0.0.1:") and slack.url.endswith("/api/")
    response = await client.auth_test()
    assert response["ok"] and response["user_id"] == "U0BOT"


async def test_every_call_is_recorded_with_its_params_and_token(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    await client.chat_postMessage(channel="C1", text="hi", blocks=blocks)
    await client.users_lookupByEmail(email="anna@example.com")
    (post,) = slack.calls("chat.postMessage")
    assert post.params == {"channel": "C1", "text": "hi", "blocks": blocks}
    assert post.token == TOKEN and post.json_body
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    (lookup,) = slack.calls("users.lookupByEmail")
    assert lookup.params == {"email": "anna@example.com"} and not lookup.json_body
    assert [c.method for c in slack.calls()] == ["chat.postMessage", "users.lookupByEmail"]


async def test_form_encoded_json_params_are_decoded(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    view = {"type": "home", "blocks": [{"type": "divider"}]}
    # slack_sdk form-encodes some methods, with JSON text in parameters like view/blocks.
    await client.api_call("views.publish", data={"user_id": "U0ANNA", "view": json.dumps(view)})
    (call,) = slack.calls("views.publish")
    assert not call.json_body and call.params["view"] == view


async def test_users_are_found_by_email_and_id(client: AsyncWebClient) -> None:
    found = await client.users_lookupByEmail(email="ANNA@example.com")
    assert found["user"]["id"] == "U0ANNA"
    info = await client.users_info(user="U0ANNA")
    assert info["user"]["profile"]["email"] == "anna@example.com"
    with pytest.raises(SlackApiError) as caught:
        await client.users_lookupByEmail(email="nobody@example.com")
    assert caught.value.response["error"] == "users_not_found"


async def test_a_dm_is_opened_posted_and_updated_in_place(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    channel = (await client.conversations_open(users="U0ANNA"))["channel"]["id"]
    posted = await client.chat_postMessage(channel=channel, text="Approve?")
    assert posted["channel"] == channel and posted["ts"]
    updated = await client.chat_update(channel=channel, ts=posted["ts"], text="Approved")
    assert updated["ts"] == posted["ts"]
    assert slack.messages[(channel, posted["ts"])]["text"] == "Approved"
    with pytest.raises(SlackApiError):
        await client.chat_update(channel=channel, ts="1.2", text="x")
    ephemeral = await client.chat_postEphemeral(channel=channel, user="U0ANNA", text="psst")
    assert ephemeral["message_ts"]


async def test_posting_to_a_user_id_lands_in_their_dm(client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="U0ANNA", text="hi")
    opened = await client.conversations_open(users="U0ANNA")
    assert posted["channel"] == opened["channel"]["id"]


async def test_channel_and_user_group_members_are_configurable(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.set_members("C0TEAM", ["U1", "U2"])
    slack.set_usergroup("S0FIN", ["U3"])
    assert (await client.conversations_members(channel="C0TEAM"))["members"] == ["U1", "U2"]
    assert (await client.usergroups_users_list(usergroup="S0FIN"))["users"] == ["U3"]


async def test_user_groups_are_listed_with_handles_and_only_ids_list_their_members(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    staff = slack.set_usergroup("@staff", ["U1", "U2"])
    assert staff.startswith("S") and slack.set_usergroup("staff", ["U1"]) == staff  # same group again
    slack.set_usergroup("S0FIN", ["U3"], handle="finance")
    listed = (await client.usergroups_list())["usergroups"]
    assert {(g["handle"], g["id"]) for g in listed} == {("staff", staff), ("finance", "S0FIN")}
    assert (await client.usergroups_users_list(usergroup=staff))["users"] == ["U1"]
    for handle in ("staff", "@staff", "finance"):  # Slack refuses a handle where it wants the id
        with pytest.raises(SlackApiError) as err:
            await client.usergroups_users_list(usergroup=handle)
        assert err.value.response["error"] == "no_such_subteam"


async def test_views_are_opened_pushed_updated_and_published(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "T"},
        "blocks": [{"type": "divider"}],
    }
    opened = await client.views_open(trigger_id="123.456", view=view)
    view_id = opened["view"]["id"]
    updated = await client.views_update(view_id=view_id, view={**view, "callback_id": "x"})
    assert updated["view"]["id"] == view_id and updated["view"]["callback_id"] == "x"
    pushed = await client.views_push(trigger_id="123.457", view=view)
    assert pushed["view"]["id"] != view_id
    home = {"type": "home", "blocks": [{"type": "divider"}]}
    first = await client.views_publish(user_id="U0ANNA", view=home)
    second = await client.views_publish(user_id="U0ANNA", view=home)
    assert first["view"]["id"] == second["view"]["id"]
    assert [c.method for c in slack.calls()] == [
        "views.open",
        "views.update",
        "views.push",
        "views.publish",
        "views.publish",
    ]


async def test_a_rate_limited_call_answers_429_with_retry_after(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C1", text="hi")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"]
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]


async def test_a_client_with_the_rate_limit_handler_retries_after_a_429(
    slack: FakeSlack,
) -> None:
    client = AsyncWebClient(
        token=TOKEN,
        base_url=slack.url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"]
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]


async def test_a_method_can_be_told_to_fail_with_a_slack_error(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.fail("chat.postMessage", "channel_not_found", times=1)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C404", text="hi")
    assert caught.value.response["error"] == "channel_not_found"
    assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"]
    slack.fail("views.open", "expired_trigger_id", times=None)
    for _ in range(2):
        with pytest.raises(SlackApiError, match="expired_trigger_id"):
            await client.views_open(trigger_id="1", view={"type": "modal"})
    slack.clear_failures()


async def test_calls_without_a_valid_token_are_refused() -> None:
    async with FakeSlack(valid_tokens={TOKEN}) as fake:
        with pytest.raises(SlackApiError, match="invalid_auth"):
            await AsyncWebClient(token="xoxb-wrong", base_url=fake.url).auth_test()
        with pytest.raises(SlackApiError, match="not_authed"):
            await AsyncWebClient(base_url=fake.url).auth_test()
