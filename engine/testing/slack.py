"""The test kit's Slack: the fake Web API (``engine.testing.fakeslack``) where everyone is on
Slack unless the test says otherwise, read back by person or channel."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from engine.testing.fakeslack import Call, FakeSlack


@dataclass(frozen=True)
class Message:
    """A message flowbot posted (or last updated) in a channel or a DM."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    call: Call

    @property
    def content(self) -> str:
        """Its text and the text of its blocks, for ``"..." in message.content``."""
        return self.text + "\n" + json.dumps(self.blocks, ensure_ascii=False)

    def __contains__(self, needle: object) -> bool:
        return isinstance(needle, str) and needle in self.content


class KitSlack(FakeSlack):
    """A FakeSlack on which an email nobody registered is a Slack user too (``U`` and a digest
    of the email), unless ``outside_slack(email)`` said that person has no Slack account."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._outside: set[str] = set()

    def outside_slack(self, *emails: str) -> None:
        """These people are not on Slack: flowbot mails them instead (``flow.mail``)."""
        for email in emails:
            self._outside.add(email.strip().lower())

    def user_id(self, person: str) -> str:
        """The Slack user id of ``person`` (an email, or already a user id)."""
        if not person or "@" not in person:
            return person
        lowered = person.strip().lower()
        for user in self.users.values():
            if str(user["profile"].get("email", "")).lower() == lowered:
                return str(user["id"])
        if lowered in self._outside:
            raise LookupError(f"{person} is not on Slack in this test (outside_slack)")
        return str(self.add_user(person, "U" + hashlib.sha1(lowered.encode()).hexdigest()[:9].upper())["id"])

    def _api_users_lookupByEmail(self, params: dict[str, Any]) -> dict[str, Any]:
        email = str(params.get("email", ""))
        if "@" in email and email.strip().lower() not in self._outside:
            self.user_id(email)
        return super()._api_users_lookupByEmail(params)

    def messages_in(self, channel: str) -> list[Message]:
        """Messages posted to ``channel`` (an id, ``#name``, or a DM ``D...``), oldest first, as last
        updated."""
        found = []
        for call in self.calls("chat.postMessage"):
            if not call.response.get("ok"):
                continue
            where = str(call.response.get("channel"))
            if where != channel and str(call.params.get("channel")) != channel:
                continue
            ts = str(call.response["ts"])
            current = self.messages.get((where, ts), {})
            found.append(Message(where, ts, str(current.get("text", call.params.get("text", ""))),
                                 list(current.get("blocks") or call.params.get("blocks") or []), call))
        return found

    def messages_to(self, person: str) -> list[Message]:
        """Direct messages flowbot sent ``person`` (an email or a user id), oldest first."""
        try:
            uid = self.user_id(person)
        except LookupError:
            return []
        return self.messages_in("D" + uid)
