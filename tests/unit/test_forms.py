"""engine.forms: definitions, defaults, validation, pages and load-time checks."""

from __future__ import annotations

import pytest

from engine.errors import FlowbotError
from engine.forms import (
    Approval,
    Checkboxes,
    Date,
    DateTime,
    Email,
    Facts,
    Form,
    FormError,
    Links,
    LongText,
    Markdown,
    MultiSelect,
    Number,
    Page,
    Radio,
    Rule,
    Select,
    Text,
    Url,
    UserPicker,
    fill_template,
)

# --- definitions ------------------------------------------------------------------------------


def test_a_form_with_fields_has_one_page_holding_them() -> None:
    form = Form("Expense", [Text("name", "Name"), Number("amount", "Amount")])
    assert [p.name for p in form.pages] == ["main"]
    assert [f.name for f in form.fields()] == ["name", "amount"]
    assert form.field("amount").label == "Amount"


def test_a_form_needs_either_fields_or_pages() -> None:
    with pytest.raises(FormError, match="either fields"):
        Form("Nothing")
    with pytest.raises(FormError, match="either fields"):
        Form("Both", [Text("a", "A")], pages=[Page("p", [Text("b", "B")])])


def test_form_error_is_a_flowbot_error() -> None:
    assert issubclass(FormError, FlowbotError)


def test_options_accept_strings_and_value_label_pairs() -> None:
    field = Select("dept", "Department", ["sales", ("eng", "Engineering")])
    assert [(o.value, o.label) for o in field.choices] == [
        ("sales", "sales"),
        ("eng", "Engineering"),
    ]


def test_a_malformed_option_fails_when_the_field_is_declared() -> None:
    with pytest.raises(FormError, match="field 'dept'"):
        Select("dept", "Department", [("eng", "Engineering", "extra")])  # type: ignore[list-item]


def test_an_unknown_field_or_page_is_a_form_error() -> None:
    form = Form("F", [Text("a", "A")])
    with pytest.raises(FormError, match="no field 'b'"):
        form.field("b")
    with pytest.raises(FormError, match="no page 'x'"):
        form.page("x")


# --- templates and defaults -------------------------------------------------------------------


def test_templates_fill_payload_keys_and_dotted_paths() -> None:
    payload = {"amount": 120.5, "employee": {"name": "Anna"}, "tags": ["a", "b"]}
    text = "{employee.name} asks {amount} for {tags}; {missing}|{{literal}}"
    assert fill_template(text, payload) == "Anna asks 120.5 for a, b; |{literal}"


def test_templates_escape_only_substituted_values() -> None:
    assert fill_template("<b>{x}</b>", {"x": "<!channel>"}, escape=str.upper) == "<b><!CHANNEL></b>"


def test_initial_values_prefer_answers_then_payload_then_default() -> None:
    form = Form(
        "F",
        [
            Text("a", "A", default_from="who", default="fallback"),
            Text("b", "B", default_from="missing", default="fallback"),
            Text("c", "C", default_from="who"),
        ],
    )
    values = form.initial_values({"who": "Anna"}, answers={"c": "typed"})
    assert values == {"a": "Anna", "b": "fallback", "c": "typed"}


def test_initial_values_coerce_payload_values_and_drop_ones_that_do_not_fit() -> None:
    form = Form(
        "F",
        [
            Number("n", "N", default_from="n"),
            Number("bad", "Bad", default_from="bad"),
            Select("s", "S", ["a", "b"], default_from="s"),
            MultiSelect("m", "M", ["a", "b"], default_from="m"),
            Date("d", "D", default_from="d"),
        ],
    )
    payload = {"n": "12", "bad": "twelve", "s": "zzz", "m": "a", "d": "2024-02-30"}
    assert form.initial_values(payload) == {"n": 12, "m": ["a"]}


# --- validation -------------------------------------------------------------------------------


def _everything() -> Form:
    return Form(
        "Everything",
        [
            Text("name", "Name", max_length=5),
            LongText("notes", "Notes", required=False),
            Number("count", "Count", min=1, max=10),
            Number("price", "Price", decimal=True, min=0),
            Email("email", "Email"),
            Url("site", "Site"),
            Date("day", "Day"),
            DateTime("at", "At"),
            Select("dept", "Dept", ["a", "b"]),
            MultiSelect("tags", "Tags", ["x", "y", "z"], max_selected=2),
            UserPicker("owner", "Owner"),
            UserPicker("watchers", "Watchers", multi=True),
            Checkboxes("flags", "Flags", ["f1", "f2"], required=False),
            Radio("size", "Size", ["s", "m"]),
        ],
    )


GOOD = {
    "name": "Anna",
    "notes": None,
    "count": 3,
    "price": 9.99,
    "email": "anna@example.com",
    "site": "https://example.com/x",
    "day": "2024-05-01",
    "at": "2024-05-01T12:00:00+00:00",
    "dept": "a",
    "tags": ["x", "y"],
    "owner": "U123ABC",
    "watchers": ["U1", "W2"],
    "flags": [],
    "size": "m",
}


def test_valid_answers_have_no_errors() -> None:
    assert _everything().validate(GOOD) == {}


def test_required_fields_left_empty_are_reported_and_optional_ones_are_not() -> None:
    errors = _everything().validate({})
    assert errors["name"] == "This field is required."
    assert errors["tags"] == "This field is required."
    assert "notes" not in errors and "flags" not in errors


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Anna Smith", "Enter at most 5 characters."),
        ("count", 0, "Enter a number between 1 and 10."),
        ("count", 2.5, "Enter a whole number."),
        ("count", "3", "Enter a number."),
        ("price", -1, "Enter a number of at least 0."),
        ("email", "anna@", "Enter a valid email address, like name@example.com."),
        ("site", "ftp://example.com", "Enter a valid link starting with http:// or https://."),
        ("day", "01/05/2024", "Enter a date as YYYY-MM-DD."),
        ("day", "2024-02-30", "Enter a date as YYYY-MM-DD."),
        ("at", "2024-05-01T12:00:00", "Enter a date and time with a time zone."),
        ("dept", "c", "Choose one of the options."),
        ("tags", ["x", "nope"], "Choose from the options."),
        ("tags", ["x", "y", "z"], "Choose at most 2."),
        ("owner", "anna", "Choose a person."),
        ("watchers", "U1", "Choose one or more people."),
        ("size", "xl", "Choose one of the options."),
    ],
)
def test_a_bad_value_gets_a_message_on_its_field(field: str, value: object, message: str) -> None:
    assert _everything().validate({**GOOD, field: value}) == {field: message}


def test_a_per_field_validator_runs_on_given_values() -> None:
    def even(value: int) -> str | None:
        return None if value % 2 == 0 else "Pick an even number."

    form = Form("F", [Number("n", "N", validate=even, required=False)])
    assert form.validate({"n": 3}) == {"n": "Pick an even number."}
    assert form.validate({"n": 4}) == {}
    assert form.validate({"n": None}) == {}


def test_a_rule_puts_its_message_on_its_field() -> None:
    form = Form(
        "Trip",
        [Date("start", "Start"), Date("end", "End")],
        rules=[Rule(lambda a: a["end"] >= a["start"], field="end", message="End before start.")],
    )
    assert form.validate({"start": "2024-05-02", "end": "2024-05-01"}) == {
        "end": "End before start."
    }
    assert form.validate({"start": "2024-05-01", "end": "2024-05-01"}) == {}


def test_rules_wait_until_every_field_of_the_page_is_valid() -> None:
    rule = Rule(lambda a: a["end"] >= a["start"], field="end", message="End before start.")
    form = Form("Trip", [Date("start", "Start"), Date("end", "End")], rules=[rule])
    # The rule would raise on a missing start; it is not run while start is in error.
    assert form.validate({"end": "2024-05-01"}) == {"start": "This field is required."}


# --- pages ------------------------------------------------------------------------------------


def _trip() -> Form:
    return Form(
        "Trip",
        pages=[
            Page("basics", [Select("kind", "Kind", ["local", "abroad"])]),
            Page(
                "passport",
                [Text("passport", "Passport number")],
                when=lambda a: a.get("kind") == "abroad",
            ),
            Page("dates", [Date("start", "Start")]),
        ],
    )


def test_next_page_skips_pages_whose_condition_is_false() -> None:
    form = _trip()
    assert form.next_page("basics", {"kind": "local"}).name == "dates"  # type: ignore[union-attr]
    assert form.next_page("basics", {"kind": "abroad"}).name == "passport"  # type: ignore[union-attr]
    assert form.next_page("dates", {"kind": "abroad"}) is None


def test_validating_one_page_checks_only_its_fields() -> None:
    assert _trip().validate({"kind": "abroad"}, page="basics") == {}
    assert _trip().validate({}, page="passport") == {"passport": "This field is required."}


def test_validating_the_whole_form_ignores_skipped_pages() -> None:
    form = _trip()
    assert form.validate({"kind": "local", "start": "2024-01-01"}) == {}
    assert form.validate({"kind": "abroad", "start": "2024-01-01"}) == {
        "passport": "This field is required."
    }


def test_a_subclass_can_branch_by_overriding_next_page() -> None:
    class Branching(Form):
        def next_page(self, current: str | Page, answers: dict) -> Page | None:  # type: ignore[override]
            if self.page(current).name == "a" and answers.get("skip"):
                return None
            return super().next_page(current, answers)

    form = Branching("B", pages=[Page("a", [Text("x", "X")]), Page("b", [Text("y", "Y")])])
    assert [p.name for p in form.page_path({"skip": True})] == ["a"]
    assert [p.name for p in form.page_path({})] == ["a", "b"]


# --- approval ---------------------------------------------------------------------------------


def test_approval_answers_are_a_decision_and_a_comment() -> None:
    approval = Approval("Expense", {"Amount": "{amount}"})
    assert approval.answers("approved") == {"decision": "approved", "comment": None}
    assert approval.answers("declined", "  too much ") == {
        "decision": "declined",
        "comment": "too much",
    }


def test_declining_an_approval_requires_a_comment_by_default() -> None:
    approval = Approval("Expense", {"Amount": "{amount}"})
    with pytest.raises(FormError, match="Say why"):
        approval.answers("declined", " ")
    assert approval.validate({"decision": "declined"}) == {"comment": "Say why you decline."}
    assert approval.decline_form().validate({}) == {"comment": "This field is required."}


def test_an_approval_without_comment_on_decline_accepts_a_bare_decline() -> None:
    approval = Approval("Expense", comment_on_decline=False)
    assert approval.answers("declined") == {"decision": "declined", "comment": None}
    assert approval.validate({"decision": "declined"}) == {}


def test_an_approval_refuses_an_unknown_decision() -> None:
    with pytest.raises(FormError, match="unknown decision"):
        Approval("Expense").answers("maybe")


def test_an_approval_title_may_be_longer_than_a_modal_title() -> None:
    approval = Approval("Expense approval for the finance team")
    assert approval.check() == []
    assert approval.decline_form().title == "Decline"


# --- load-time checks -------------------------------------------------------------------------


def test_a_well_formed_form_has_no_problems() -> None:
    assert _everything().check() == []
    assert _trip().check() == []


def test_a_title_over_24_characters_is_reported_with_the_form_name() -> None:
    problems = Form("A title that is far too long", [Text("a", "A")]).check()
    assert problems == [
        "form 'A title that is far too long': title is 28 characters long; Slack allows at most 24"
    ]


def test_more_than_100_blocks_on_a_page_is_reported() -> None:
    form = Form("Big", [Text(f"f{i}", f"F{i}") for i in range(101)])
    assert form.check() == ["form 'Big': renders 101 blocks; a Slack modal holds at most 100"]


def test_more_than_100_select_options_is_reported_with_a_hint() -> None:
    form = Form("F", [Select("s", "S", [str(i) for i in range(101)])])
    (problem,) = form.check()
    assert "field 's'" in problem and "101 options" in problem and "options_from" in problem


def test_more_than_10_checkboxes_or_radio_options_is_reported() -> None:
    options = [str(i) for i in range(11)]
    form = Form("F", [Checkboxes("c", "C", options), Radio("r", "R", options)])
    problems = form.check()
    assert len(problems) == 2
    assert all("11 options" in p and "at most 10" in p for p in problems)


def test_option_text_and_value_limits_are_reported() -> None:
    form = Form("F", [Select("s", "S", [("v" * 151, "ok"), ("ok", "t" * 76)])])
    problems = form.check()
    assert any("option value" in p and "at most 150" in p for p in problems)
    assert any("option label" in p and "at most 75" in p for p in problems)


def test_duplicate_field_names_across_pages_are_reported() -> None:
    form = Form("F", pages=[Page("a", [Text("x", "X")]), Page("b", [Text("x", "X again")])])
    assert "form 'F': field name 'x' is used 2 times" in form.check()


def test_label_placeholder_and_name_limits_are_reported() -> None:
    form = Form(
        "F",
        [
            Text("a", "L" * 2001),
            Text("b", "B", placeholder="p" * 151),
            Text("n" * 256, "N"),
            Checkboxes("c", "C", ["x"], placeholder="pick"),
        ],
    )
    problems = "\n".join(form.check())
    assert "field 'a': label is 2001 characters long; Slack allows at most 2000" in problems
    assert "field 'b': placeholder is 151 characters long; Slack allows at most 150" in problems
    assert "block_id and action_id, at most 255" in problems
    assert "no placeholder on a checkboxes field" in problems


def test_inconsistent_field_settings_are_reported() -> None:
    form = Form(
        "F",
        [
            Number("n", "N", min=10, max=1),
            Select("s", "S", ["a"], options_from=lambda q, p: []),
            Select("e", "E"),
            Checkboxes("c", "C", options_from=lambda q, p: []),
            Select("d", "D", ["a", "b"], default="c"),
            Text("t", "T", min_length=5, max_length=2),
        ],
        rules=[Rule(lambda a: True, field="ghost", message="?")],
    )
    problems = "\n".join(form.check())
    assert "field 'n': min 10 exceeds max 1" in problems
    assert "field 's': give options or options_from, not both" in problems
    assert "field 'e': has no options" in problems
    assert "field 'c': a checkboxes field cannot load options_from a function" in problems
    assert "field 'd': default 'c' is not a valid answer: Choose one of the options." in problems
    assert "field 't': min_length 5 exceeds max_length 2" in problems
    assert "a rule names field 'ghost'" in problems


def test_problems_of_a_multi_page_form_name_the_page() -> None:
    form = Form("F", pages=[Page("p1", [Text("a", "")]), Page("p2", [])])
    problems = form.check()
    assert "form 'F', page 'p1', field 'a': label must be a non-empty text" in problems
    assert "form 'F', page 'p2': has nothing to show" in problems


def test_check_or_raise_raises_a_form_error_listing_every_problem() -> None:
    form = Form("A title that is far too long", [Select("s", "S")])
    with pytest.raises(FormError) as caught:
        form.check_or_raise()
    assert len(caught.value.problems) == 2
    Form("Fine", [Text("a", "A")]).check_or_raise()


def test_display_blocks_render_from_the_payload() -> None:
    payload = {"amount": 12, "id": "42"}
    assert Markdown("Pay *{amount}*").render(payload) == "Pay *12*"
    assert Facts({"Amount": "{amount}", "Fixed": 3}).render(payload) == [
        ("Amount", "12"),
        ("Fixed", "3"),
    ]
    assert Facts([("A", "{amount}")]).render(payload) == [("A", "12")]
    links = Links([("Invoice", "https://x.test/{id}"), ("Empty", "{missing}")])
    assert links.render(payload) == [("Invoice", "https://x.test/42")]
