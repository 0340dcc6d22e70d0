"""Forms and pages: the data a stage author writes, and the logic that walks it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, TypeAlias

from engine.forms import limits
from engine.forms.checks import block_count, check_display, check_field, check_length
from engine.forms.display import Display
from engine.forms.errors import FormError
from engine.forms.fields import Field, is_empty
from engine.forms.templates import lookup
from engine.forms.validation import Rule, validate_answers

#: What a page holds: input fields and read-only display blocks, in display order.
Item: TypeAlias = "Field | Display"

#: The name of the only page of a form built with ``fields=``.
MAIN_PAGE = "main"


@dataclass(frozen=True)
class Page:
    """One screen of a form.

    ``when(answers_so_far)`` returning false skips the page; ``title`` replaces the form title
    on this page; ``rules`` are cross-field rules checked when the page is submitted.
    """

    name: str
    fields: Sequence[Item] = ()
    _: KW_ONLY
    when: Callable[[dict[str, Any]], bool] | None = None
    title: str | None = None
    rules: Sequence[Rule] = ()

    @property
    def inputs(self) -> list[Field]:
        """The input fields of the page, in order."""
        return [item for item in self.fields if isinstance(item, Field)]

    def applies(self, answers: Mapping[str, Any]) -> bool:
        """Tell whether the page is shown, given the answers so far."""
        return self.when is None or bool(self.when(dict(answers)))


class Form:
    """A form: a title and either ``fields=[...]`` (one page) or ``pages=[Page(...), ...]``.

    ``rules`` are cross-field rules for the whole form (each checked on the page holding its
    field). ``name`` identifies the form in error messages (defaults to the title).
    """

    #: Longest title ``check()`` accepts: a modal title.
    title_limit: int = limits.MODAL_TITLE

    def __init__(
        self,
        title: str,
        fields: Sequence[Item] | None = None,
        *,
        pages: Sequence[Page] | None = None,
        submit_label: str = "Submit",
        close_label: str = "Cancel",
        next_label: str = "Next",
        rules: Sequence[Rule] = (),
        name: str | None = None,
    ) -> None:
        if (fields is None) == (pages is None):
            raise FormError(f"form {title!r}: give either fields=[...] or pages=[...]")
        self.title = title
        self.pages: list[Page] = (
            list(pages) if pages is not None else [Page(MAIN_PAGE, list(fields or ()))]
        )
        self.submit_label = submit_label
        self.close_label = close_label
        self.next_label = next_label
        self.rules: list[Rule] = list(rules)
        self.name = name or title

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.title!r}, pages={[p.name for p in self.pages]})"

    # --- structure --------------------------------------------------------------------------

    def page(self, page: str | Page | None = None) -> Page:
        """The page named ``page`` (a Page is returned as is; None means the first page)."""
        if isinstance(page, Page):
            return page
        if page is None:
            return self.pages[0]
        for candidate in self.pages:
            if candidate.name == page:
                return candidate
        raise FormError(f"form {self.name!r} has no page {page!r}")

    def fields(self) -> list[Field]:
        """Every input field of every page, in order."""
        return [f for p in self.pages for f in p.inputs]

    def field(self, name: str) -> Field:
        """The input field called ``name`` (FormError when there is none)."""
        for f in self.fields():
            if f.name == name:
                return f
        raise FormError(f"form {self.name!r} has no field {name!r}")

    def page_of(self, field_name: str) -> Page:
        """The page holding the field called ``field_name``."""
        for p in self.pages:
            if any(f.name == field_name for f in p.inputs):
                return p
        raise FormError(f"form {self.name!r} has no field {field_name!r}")

    # --- navigation -------------------------------------------------------------------------

    def first_page(self, answers: Mapping[str, Any] | None = None) -> Page:
        """The first page shown (the first whose ``when`` holds; the first page otherwise)."""
        answers = answers or {}
        for p in self.pages:
            if p.applies(answers):
                return p
        return self.pages[0]

    def next_page(self, current: str | Page, answers: Mapping[str, Any]) -> Page | None:
        """The page after ``current`` given the answers so far, or None when the form is done.

        Override in a subclass for branching that ``Page(when=...)`` cannot express.
        """
        index = self.pages.index(self.page(current))
        for p in self.pages[index + 1 :]:
            if p.applies(answers):
                return p
        return None

    def has_later_pages(self, current: str | Page) -> bool:
        """Tell whether any page follows ``current`` (its ``when`` may still skip it)."""
        return self.pages.index(self.page(current)) < len(self.pages) - 1

    def page_path(self, answers: Mapping[str, Any]) -> Iterator[Page]:
        """The pages a person goes through given ``answers``, in order."""
        page: Page | None = self.first_page(answers)
        seen: set[str] = set()
        while page is not None and page.name not in seen:
            seen.add(page.name)  # guards an overridden next_page that loops
            yield page
            page = self.next_page(page, answers)

    # --- values -----------------------------------------------------------------------------

    def initial_values(
        self,
        payload: Mapping[str, Any],
        answers: Mapping[str, Any] | None = None,
        page: str | Page | None = None,
    ) -> dict[str, Any]:
        """Initial value of each field (of ``page``, or of every page): a previous answer,
        else the payload value named by ``default_from``, else ``default``.

        Values that do not fit the field (a word for a number, an unknown option) are left
        out, so a surprising payload never breaks the form.
        """
        answers = answers or {}
        fields = self.page(page).inputs if page is not None else self.fields()
        values: dict[str, Any] = {}
        for f in fields:
            value = answers.get(f.name)
            if is_empty(value) and f.default_from is not None:
                value = lookup(payload, f.default_from)
            if is_empty(value):
                value = f.default
            if is_empty(value):
                continue
            value = f.coerce(value)
            if f.value_error(value) is None:
                values[f.name] = value
        return values

    def validate(
        self, answers: Mapping[str, Any], page: str | Page | None = None
    ) -> dict[str, str]:
        """Errors by field name (empty when valid): of ``page`` only, or of every page on the
        path the answers lead through (skipped pages are not checked)."""
        pages = [self.page(page)] if page is not None else list(self.page_path(answers))
        errors: dict[str, str] = {}
        for p in pages:
            errors.update(validate_answers(p.inputs, [*p.rules, *self.rules], answers))
        return errors

    def check(self) -> list[str]:
        """Problems of the definition itself (Slack limits, duplicates...); empty when fine."""
        return check_form(self)

    def check_or_raise(self) -> None:
        """Raise FormError listing every problem ``check()`` finds."""
        problems = self.check()
        if problems:
            raise FormError("\n".join(problems), problems=problems)


def check_form(form: Form) -> list[str]:
    """Every problem of ``form``'s definition (empty when it can render and be answered)."""
    where = f"form {form.name!r}"
    problems: list[str] = []
    check_length(problems, where, "title", form.title, form.title_limit)
    for what in ("submit_label", "close_label", "next_label"):
        check_length(problems, where, what, getattr(form, what), limits.MODAL_BUTTON)
    if not form.pages:
        problems.append(f"{where}: has no pages")
    for name, count in Counter(p.name for p in form.pages).items():
        if count > 1:
            problems.append(f"{where}: page name {name!r} is used {count} times")
    for name, count in Counter(f.name for f in form.fields()).items():
        if count > 1:
            problems.append(f"{where}: field name {name!r} is used {count} times")
    for page in form.pages:
        problems += _check_page(form, page)
    names = {f.name for f in form.fields()}
    for rule in [*form.rules, *(r for p in form.pages for r in p.rules)]:
        if rule.field not in names:
            problems.append(f"{where}: a rule names field {rule.field!r}, which the form lacks")
    return problems


def _check_page(form: Form, page: Page) -> list[str]:
    where = f"form {form.name!r}"
    if len(form.pages) > 1:
        where += f", page {page.name!r}"
    problems: list[str] = []
    if page.title is not None:
        check_length(problems, where, "title", page.title, limits.MODAL_TITLE)
    if not page.fields:
        problems.append(f"{where}: has nothing to show")
    blocks = sum(block_count(item) for item in page.fields)
    if blocks > limits.VIEW_BLOCKS:
        problems.append(
            f"{where}: renders {blocks} blocks; a Slack modal holds at most {limits.VIEW_BLOCKS}"
        )
    for item in page.fields:
        if isinstance(item, Field):
            problems += check_field(f"{where}, field {item.name!r}", item)
        elif isinstance(item, Display):
            problems += check_display(where, item)
        else:
            problems.append(f"{where}: {item!r} is neither a field nor a display block")
    return problems
