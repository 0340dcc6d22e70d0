"""The fake Slack Web API now ships with flowbot's test kit (``engine.testing.fakeslack``); the
suite's own tests import it from here as before."""

from engine.testing.fakeslack import Call, FakeSlack

__all__ = ["Call", "FakeSlack"]
