"""Input fields of a form: each kind knows its answer type and how to check a value.

Answers are plain JSON values: ``str`` for text, email, url, choices and user ids; ``int`` or
``float`` for numbers (``int`` whenever the number is whole); ``"YYYY-MM-DD"`` for dates; an ISO
8601 string with a UTC offset for date-times; lists for multi-selects, checkboxes and multi
user pickers. An empty answer is ``None`` (``[]`` for the list kinds).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, TypeAlias
from urllib.parse import urlparse

from engine.forms import messages

#: ``validate(value)``: a per-field check returning an error message or None.
Validator: TypeAlias = Callable[[Any], "str | None"]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: A person as a user picker takes them: a Slack user id, or an email (answers given without Slack).
_USER_ID = re.compile(r"[UW][A-Z0-9]+|[^@\s]+@[^@\s]+\.[^@\s]+")


def is_empty(value: Any) -> bool:
    """Tell whether an answer counts as not given (None, blank text, empty list)."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, list | tuple) and len(value) == 0


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but True is not an amount.
    return isinstance(value, int | float) and not isinstance(value, bool)


def whole(value: int | float) -> int | float:
    """Return ``value`` as an int when it is a whole number (answers use int when integer)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_number(text: str) -> int | float | None:
    """Parse a number typed by a person ("12", "-3.50"); None when it is not a number."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    if number == number.to_integral_value():
        return int(number)
    return float(number)


@dataclass(frozen=True)
class Field:
    """Base of every input field: ``name`` is the key of the answer, ``label`` what people read.

    ``default`` is the initial value; ``default_from`` names a payload key (dotted keys walk
    nested objects) whose value is the initial value instead, falling back to ``default``.
    ``validate(value)`` is a custom check run on non-empty values that passed the built-in ones.
    """

    name: str
    label: str
    _: KW_ONLY
    required: bool = True
    default: Any = None
    default_from: str | None = None
    hint: str | None = None
    placeholder: str | None = None
    validate: Validator | None = None

    #: A stable name of the kind, used by renderers to pick an element.
    kind: ClassVar[str] = "field"

    @property
    def is_multi(self) -> bool:
        """True when the answer is a list."""
        return False

    def empty_value(self) -> Any:
        """The answer when nothing was given."""
        return [] if self.is_multi else None

    def coerce(self, value: Any) -> Any:
        """Best-effort conversion of a payload value into this field's answer type."""
        return value

    def value_error(self, value: Any) -> str | None:
        """The built-in check of a non-empty value of this kind (None when valid)."""
        return None if isinstance(value, str) else messages.NOT_TEXT

    def error(self, value: Any) -> str | None:
        """The error message for ``value`` as an answer of this field, or None when valid."""
        if is_empty(value):
            return messages.REQUIRED if self.required else None
        problem = self.value_error(value)
        if problem is None and self.validate is not None:
            problem = self.validate(value)
        return problem


@dataclass(frozen=True)
class Text(Field):
    """A single line of text; ``min_length`` / ``max_length`` bound its length."""

    _: KW_ONLY
    min_length: int | None = None
    max_length: int | None = None
    kind: ClassVar[str] = "text"

    def value_error(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return messages.NOT_TEXT
        if self.min_length is not None and len(value) < self.min_length:
            return messages.TOO_SHORT.format(n=self.min_length)
        if self.max_length is not None and len(value) > self.max_length:
            return messages.TOO_LONG.format(n=self.max_length)
        return None


@dataclass(frozen=True)
class LongText(Text):
    """Multi-line text (a comment, a description)."""

    kind: ClassVar[str] = "long_text"


@dataclass(frozen=True)
class Number(Field):
    """A number between ``min`` and ``max``; whole numbers only unless ``decimal=True``."""

    _: KW_ONLY
    min: int | float | None = None
    max: int | float | None = None
    decimal: bool = False
    kind: ClassVar[str] = "number"

    def coerce(self, value: Any) -> Any:
        if isinstance(value, str):
            parsed = parse_number(value)
            return value if parsed is None else parsed
        return whole(value) if _is_number(value) else value

    def value_error(self, value: Any) -> str | None:
        if not _is_number(value):
            return messages.NOT_NUMBER
        if not self.decimal and not float(value).is_integer():
            return messages.NOT_INTEGER
        low, high = self.min, self.max
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                return messages.NUMBER_RANGE.format(min=low, max=high)
            if low is not None:
                return messages.NUMBER_MIN.format(min=low)
            return messages.NUMBER_MAX.format(max=high)
        return None


@dataclass(frozen=True)
class Email(Field):
    """An email address."""

    kind: ClassVar[str] = "email"

    def value_error(self, value: Any) -> str | None:
        ok = isinstance(value, str) and _EMAIL.fullmatch(value) is not None
        return None if ok else messages.EMAIL


@dataclass(frozen=True)
class Url(Field):
    """An http(s) link."""

    kind: ClassVar[str] = "url"

    def value_error(self, value: Any) -> str | None:
        if not isinstance(value, str) or any(c.isspace() for c in value):
            return messages.URL
        parts = urlparse(value)
        ok = parts.scheme in ("http", "https") and bool(parts.netloc)
        return None if ok else messages.URL


@dataclass(frozen=True)
class Date(Field):
    """A calendar date, answered as ``"YYYY-MM-DD"``."""

    kind: ClassVar[str] = "date"

    def coerce(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        return value.isoformat() if isinstance(value, dt.date) else value

    def value_error(self, value: Any) -> str | None:
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            return messages.DATE
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            return messages.DATE
        return None


@dataclass(frozen=True)
class DateTime(Field):
    """A moment in time, answered as an ISO 8601 string with a UTC offset."""

    kind: ClassVar[str] = "datetime"

    def coerce(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            # A naive datetime from a payload is taken as UTC: the only unambiguous reading.
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return aware.isoformat()
        if _is_number(value):
            return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
        return value

    def value_error(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return messages.DATETIME
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return messages.DATETIME
        return messages.DATETIME_TZ if moment.tzinfo is None else None


@dataclass(frozen=True)
class UserPicker(Field):
    """A Slack user (answer: user id), or several with ``multi=True`` (answer: list of ids).

    Answers given without Slack (the API, the CLI) may name a person by email instead."""

    _: KW_ONLY
    multi: bool = False
    max_selected: int | None = None
    kind: ClassVar[str] = "user"

    @property
    def is_multi(self) -> bool:
        return self.multi

    def coerce(self, value: Any) -> Any:
        return [value] if self.multi and isinstance(value, str) else value

    def value_error(self, value: Any) -> str | None:
        if not self.multi:
            ok = isinstance(value, str) and _USER_ID.fullmatch(value) is not None
            return None if ok else messages.USER
        if not isinstance(value, list) or not all(
            isinstance(v, str) and _USER_ID.fullmatch(v) for v in value
        ):
            return messages.USERS
        if self.max_selected is not None and len(value) > self.max_selected:
            return messages.TOO_MANY.format(n=self.max_selected)
        return None


#: Every field kind, by its ``kind`` name.
