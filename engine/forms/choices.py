"""Choice fields: selects, multi-selects, radio buttons and checkboxes, and their options."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, TypeAlias

from engine.forms import messages
from engine.forms.errors import FormError
from engine.forms.fields import Field


@dataclass(frozen=True)
class Option:
    """One choice of a select, checkboxes or radio field: the stored value and its label."""

    value: str
    label: str

    @classmethod
    def of(cls, spec: OptionSpec) -> Option:
        """Build an option from ``"value"``, ``("value", "label")`` or an ``Option``."""
        if isinstance(spec, Option):
            return spec
        if isinstance(spec, str):
            return cls(spec, spec)
        if (
            isinstance(spec, tuple | list)
            and len(spec) == 2
            and all(isinstance(part, str) for part in spec)
        ):
            return cls(spec[0], spec[1])
        raise FormError(f"an option must be a str or a (value, label) pair of str, got {spec!r}")


OptionSpec: TypeAlias = "str | tuple[str, str] | Option"
#: ``options_from(query, task_payload)``: options of an external (type-ahead) select.
OptionsLoader: TypeAlias = Callable[[str, dict[str, Any]], Sequence[OptionSpec]]


def normalize_options(specs: Sequence[OptionSpec]) -> list[Option]:
    """Turn option specs into ``Option`` objects (raises FormError on a malformed one)."""
    return [Option.of(spec) for spec in specs]


@dataclass(frozen=True)
class ChoiceField(Field):
    """Base of the choice fields: static ``options`` or an ``options_from`` loader."""

    options: Sequence[OptionSpec] = ()
    _: KW_ONLY
    options_from: OptionsLoader | None = None

    def __post_init__(self) -> None:
        # Fail at import time, where the traceback points at the form, not at render time.
        try:
            normalize_options(self.options)
        except FormError as exc:
            raise FormError(f"field {self.name!r}: {exc}") from None

    @property
    def choices(self) -> list[Option]:
        """The static options as ``Option`` objects (empty for an ``options_from`` field)."""
        return normalize_options(self.options)

    def load_options(self, query: str, payload: dict[str, Any]) -> list[Option]:
        """Options matching ``query``: from ``options_from``, else static ones filtered."""
        if self.options_from is not None:
            return normalize_options(self.options_from(query, payload))
        needle = query.strip().lower()
        return [o for o in self.choices if needle in o.label.lower()]

    def _known(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        # Options loaded by a function cannot be enumerated here; trust the select.
        return self.options_from is not None or value in {o.value for o in self.choices}


@dataclass(frozen=True)
class Select(ChoiceField):
    """A drop-down: pick one option (type-ahead when ``options_from`` is given)."""

    kind: ClassVar[str] = "select"

    def value_error(self, value: Any) -> str | None:
        return None if self._known(value) else messages.CHOICE


@dataclass(frozen=True)
class Radio(Select):
    """Radio buttons: pick one of at most 10 options, all visible."""

    kind: ClassVar[str] = "radio"


@dataclass(frozen=True)
class MultiSelect(ChoiceField):
    """A multi-select drop-down; ``max_selected`` caps how many are picked."""

    _: KW_ONLY
    max_selected: int | None = None
    kind: ClassVar[str] = "multi_select"

    @property
    def is_multi(self) -> bool:
        return True

    def coerce(self, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def value_error(self, value: Any) -> str | None:
        if not isinstance(value, list) or not all(self._known(v) for v in value):
            return messages.CHOICES
        if self.max_selected is not None and len(value) > self.max_selected:
            return messages.TOO_MANY.format(n=self.max_selected)
        return None


@dataclass(frozen=True)
class Checkboxes(MultiSelect):
    """Checkboxes: tick any of at most 10 options, all visible."""

    kind: ClassVar[str] = "checkboxes"
