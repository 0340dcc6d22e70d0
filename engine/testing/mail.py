"""An SMTP server on loopback that keeps every mail it receives (aiosmtpd): the test kit points
``SMTP_URL`` at it, so mail flowbot sends to people outside Slack can be read back."""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import socket
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MailCatcher:
    """Mail received by the test's SMTP server, oldest first (``messages``), and by recipient."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.port = _free_port()
        self._controller: Any = None

    @property
    def url(self) -> str:
        """``SMTP_URL`` for flowbot."""
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen on 127.0.0.1 (aiosmtpd runs its own thread)."""
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:  # pragma: no cover: installed with flowbot[testing]
            raise RuntimeError("the test kit's mail catcher needs aiosmtpd: pip install 'flowbot[testing]'") from exc
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook: keep the message."""
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        """Mail sent to ``address`` (case-insensitive), oldest first."""
        wanted = address.strip().lower()
        return [m for m in self.messages
                if any(wanted == a.lower() for _, a in email.utils.getaddresses([str(m.get("To", ""))]))]

    @staticmethod
    def body(message: email.message.EmailMessage) -> str:
        """The plain text body of ``message``."""
        part = message.get_body(("plain",))
        return str(part.get_content()) if part is not None else ""
