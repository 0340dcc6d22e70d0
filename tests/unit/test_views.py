"""bot.views: forms as Slack modals, submissions back as answers, DM cards and limits."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bot import messages as texts
from bot.blocks import to_mrkdwn
from bot.views import (
    approval_message_blocks,
    assignment_message_blocks,
    check_message_limits,
    check_view_limits,
    errors_response,
    parse_submission,
    payload_facts,
    render_modal,
    render_options,
    resolved_message_blocks,
    suggest_options,
)
from engine.forms import (
    Approval,
    Checkboxes,
    Date,
    DateTime,
    Email,
    Facts,
    Form,
    Links,
    LongText,
    Markdown,
    MultiSelect,
    Number,
    Page,
    Radio,
    Select,
    Text,
    Url,
    UserPicker,
)
from tests.blockkit import assert_valid_blocks, assert_valid_home, assert_valid_modal


def vendors(query: str, payload: dict[str, Any]) -> list[tuple[str, str]]:
    """An options_from loader: vendors matching the query, from the payload's region."""
    region = payload.get("region", "eu")
    names = [("acme", "Acme Corp"), ("globex", "Globex"), ("initech", "Initech")]
    return [(f"{region}-{v}", label) for v, label in names if query.lower() in label.lower()]


FIELDS = [
    Text("name", "Name", placeholder="Your full name", hint="As on your ID"),
    LongText("notes", "Notes", required=False, max_length=500),
    Number("count", "Count", min=1, max=10),
    Number("price", "Price", decimal=True, min=0),
    Email("email", "Email", default_from="requester.email"),
    Url("site", "Site", required=False),
    Date("day", "Day"),
    DateTime("at", "At"),
    Select("dept", "Department", ["sales", ("eng", "Engineering")]),
    MultiSelect("tags", "Tags", ["x", "y", "z"], max_selected=2),
    Select("vendor", "Vendor", options_from=vendors),
    MultiSelect("vendors", "Vendors", options_from=vendors, required=False),
    UserPicker("owner", "Owner"),
    UserPicker("watchers", "Watchers", multi=True, required=False),
    Checkboxes("flags", "Flags", ["f1", ("f2", "Flag two")], required=False),
    Radio("size", "Size", ["s", "m", "l"]),
]
EVERYTHING = Form(
    "Everything",
    [
        Markdown("## Request {id}\nPlease **check** the [invoice]({invoice_url})."),
        Facts({"Amount": "{amount}", "Requester": "{requester.name}"}),
        Links([("Policy", "https://example.com/policy")]),
        *FIELDS,
    ],
)
PAYLOAD = {
    "id": "R-7",
    "amount": 120.5,
    "invoice_url": "https://files.example.com/inv?id=7&v=2",
    "requester": {"name": "Anna <!channel>", "email": "anna@example.com"},
    "region": "us",
}


def modal(form: Form, payload: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("callback_id", "flowbot_form")
    kwargs.setdefault("private_metadata", '{"task": "t1"}')
    return render_modal(form, payload if payload is not None else PAYLOAD, **kwargs)


def _input(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == name)


# --- rendering --------------------------------------------------------------------------------


def test_a_form_with_every_field_kind_renders_a_valid_modal() -> None:
    view = modal(EVERYTHING)
    assert_valid_modal(view)
    assert view["type"] == "modal"
    assert view["callback_id"] == "flowbot_form"
    assert view["private_metadata"] == '{"task": "t1"}'
    assert view["title"]["text"] == "Everything"
    assert view["submit"]["text"] == "Submit"


@pytest.mark.parametrize(
    ("name", "element_type"),
    [
        ("name", "plain_text_input"),
        ("notes", "plain_text_input"),
        ("count", "number_input"),
        ("price", "number_input"),
        ("email", "email_text_input"),
        ("site", "url_text_input"),
        ("day", "datepicker"),
        ("at", "datetimepicker"),
        ("dept", "static_select"),
        ("tags", "multi_static_select"),
        ("vendor", "external_select"),
        ("vendors", "multi_external_select"),
        ("owner", "users_select"),
        ("watchers", "multi_users_select"),
        ("flags", "checkboxes"),
        ("size", "radio_buttons"),
    ],
)
def test_each_field_kind_renders_its_slack_element_with_the_field_name_as_ids(
    name: str, element_type: str
) -> None:
    view = modal(EVERYTHING)
    block = _input(view, name)
    assert block["type"] == "input"
    assert block["element"]["type"] == element_type
    assert block["element"]["action_id"] == name
    alone = modal(Form("One", [EVERYTHING.field(name)]))
    assert_valid_modal(alone)


def test_element_options_follow_the_field_settings() -> None:
    view = modal(EVERYTHING)
    assert _input(view, "notes")["element"]["multiline"] is True
    assert _input(view, "notes")["optional"] is True
    assert "optional" not in _input(view, "name")
    assert _input(view, "name")["hint"]["text"] == "As on your ID"
    assert _input(view, "name")["element"]["placeholder"]["text"] == "Your full name"
    count = _input(view, "count")["element"]
    assert (count["is_decimal_allowed"], count["min_value"], count["max_value"]) == (
        False,
        "1",
        "10",
    )
    assert _input(view, "price")["element"]["is_decimal_allowed"] is True
    assert _input(view, "tags")["element"]["max_selected_items"] == 2
    assert [o["text"]["text"] for o in _input(view, "flags")["element"]["options"]] == [
        "f1",
        "Flag two",
    ]


def test_initial_values_come_from_defaults_payload_and_previous_answers() -> None:
    form = Form(
        "Defaults",
        [
            Text("name", "Name", default_from="requester.name"),
            Number("price", "Price", decimal=True, default=0.00001),
            Email("email", "Email", default_from="requester.email"),
            Date("day", "Day", default="2024-05-01"),
            DateTime("at", "At", default="2024-05-01T12:00:00+00:00"),
            Select("dept", "Dept", ["sales", ("eng", "Engineering")], default="eng"),
            MultiSelect("tags", "Tags", ["x", "y"], default=["y"]),
            Select("vendor", "Vendor", options_from=vendors, default="us-acme"),
            UserPicker("owner", "Owner", default_from="owner"),
            UserPicker("watchers", "Watchers", multi=True, default=["U1", "U2"]),
            Checkboxes("flags", "Flags", ["f1", "f2"], default=["f2"]),
            Radio("size", "Size", ["s", "m"], default="m"),
        ],
    )
    view = modal(form, {**PAYLOAD, "owner": "U0OWNER"}, answers={"name": "Typed"})
    assert_valid_modal(view)
    element = {b["block_id"]: b["element"] for b in view["blocks"]}
    assert element["name"]["initial_value"] == "Typed"
    assert element["price"]["initial_value"] == "0.00001"
    assert element["email"]["initial_value"] == "anna@example.com"
    assert element["day"]["initial_date"] == "2024-05-01"
    assert element["at"]["initial_date_time"] == 1714564800
    assert element["dept"]["initial_option"]["text"]["text"] == "Engineering"
    assert [o["value"] for o in element["tags"]["initial_options"]] == ["y"]
    assert element["vendor"]["initial_option"]["value"] == "us-acme"
    assert element["owner"]["initial_user"] == "U0OWNER"
    assert element["watchers"]["initial_users"] == ["U1", "U2"]
    assert [o["value"] for o in element["flags"]["initial_options"]] == ["f2"]
    assert element["size"]["initial_option"]["value"] == "m"


def test_a_payload_value_that_does_not_fit_a_field_is_not_used_as_initial_value() -> None:
    form = Form("F", [Number("n", "N", default_from="n"), UserPicker("u", "U", default_from="u")])
    view = modal(form, {"n": "lots", "u": "anna@example.com"})
    assert_valid_modal(view)
    assert all("initial_value" not in b["element"] for b in view["blocks"])
    assert "initial_user" not in view["blocks"][1]["element"]


def test_display_blocks_render_as_mrkdwn_with_payload_data_escaped() -> None:
    view = modal(EVERYTHING)
    markdown, facts, links = view["blocks"][:3]
    assert markdown["text"]["text"] == (
        "*Request R-7*\nPlease *check* the <https://files.example.com/inv?id=7&amp;v=2|invoice>."
    )
    assert [f["text"] for f in facts["fields"]] == [
        "*Amount*\n120.5",
        "*Requester*\nAnna &lt;!channel&gt;",
    ]
    assert links["text"]["text"] == ":link: <https://example.com/policy|Policy>"


def test_markdown_converts_to_slack_mrkdwn_but_leaves_code_alone() -> None:
    assert to_mrkdwn("**bold** *it* ~~gone~~ `**code**`\n- item") == (
        "*bold* _it_ ~gone~ `**code**`\n• item"
    )


def test_many_facts_are_split_into_sections_of_ten() -> None:
    form = Form("Facts", [Facts({f"Fact {i}": str(i) for i in range(23)})])
    view = modal(form)
    assert_valid_modal(view)
    assert [len(b["fields"]) for b in view["blocks"]] == [10, 10, 3]


def test_long_markdown_is_split_into_several_sections() -> None:
    text = "\n".join(f"line {i:04d} " + "x" * 90 for i in range(80))
    view = modal(Form("Long", [Markdown(text)]))
    assert_valid_modal(view)
    assert len(view["blocks"]) == 3


def test_payload_data_longer_than_slack_allows_is_clipped() -> None:
    form = Form("{title}", [Facts({"Big": "{big}"}), Text("a", "A", default_from="big")])
    view = modal(form, {"title": "A templated title longer than 24", "big": "y" * 5000})
    assert_valid_modal(view)
    assert view["title"]["text"] == "A templated title longe…"


def test_errors_show_under_their_fields_when_given() -> None:
    form = Form("F", [Text("a", "A"), Text("b", "B")])
    view = modal(form, errors={"a": "Too <short>"})
    assert_valid_modal(view)
    assert [b["type"] for b in view["blocks"]] == ["input", "context", "input"]
    assert view["blocks"][1]["elements"][0]["text"] == ":warning: Too &lt;short&gt;"


def test_pages_render_one_at_a_time_with_next_until_the_last() -> None:
    form = Form(
        "Trip",
        pages=[
            Page("basics", [Select("kind", "Kind", ["local", "abroad"])]),
            Page(
                "passport",
                [Text("passport", "Passport")],
                title="Passport",
                when=lambda a: a.get("kind") == "abroad",
            ),
        ],
    )
    first = modal(form)
    assert [b["block_id"] for b in first["blocks"]] == ["kind"]
    assert first["submit"]["text"] == "Next"
    second = modal(form, page="passport", answers={"kind": "abroad"})
    assert_valid_modal(second)
    assert second["title"]["text"] == "Passport"
    assert second["submit"]["text"] == "Submit"


def test_an_approval_renders_as_a_modal_and_its_decline_form_too() -> None:
    approval = Approval("Expense approval", {"Amount": "{amount}"}, text="Approve {id}?")
    view = modal(approval)
    assert_valid_modal(view)
    assert [b["type"] for b in view["blocks"]] == ["section", "section", "input", "input"]
    decline = modal(approval.decline_form())
    assert_valid_modal(decline)
    assert decline["submit"]["text"] == "Decline"
    assert _input(decline, "comment")["element"]["multiline"] is True


# --- submissions ------------------------------------------------------------------------------


def _option(value: str, label: str | None = None) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": label or value, "emoji": True}, "value": value}


#: view.state.values as Slack sends them in a view_submission for EVERYTHING.
STATE: dict[str, Any] = {
    "name": {"name": {"type": "plain_text_input", "value": "Anna"}},
    "notes": {"notes": {"type": "plain_text_input", "value": None}},
    "count": {"count": {"type": "number_input", "value": "3"}},
    "price": {"price": {"type": "number_input", "value": "12.50"}},
    "email": {"email": {"type": "email_text_input", "value": "anna@example.com"}},
    "site": {"site": {"type": "url_text_input", "value": "https://example.com"}},
    "day": {"day": {"type": "datepicker", "selected_date": "2024-05-01"}},
    "at": {"at": {"type": "datetimepicker", "selected_date_time": 1714564800}},
    "dept": {"dept": {"type": "static_select", "selected_option": _option("eng", "Engineering")}},
    "tags": {
        "tags": {"type": "multi_static_select", "selected_options": [_option("x"), _option("z")]}
    },
    "vendor": {"vendor": {"type": "external_select", "selected_option": _option("us-acme")}},
    "vendors": {"vendors": {"type": "multi_external_select", "selected_options": []}},
    "owner": {"owner": {"type": "users_select", "selected_user": "U0OWNER"}},
    "watchers": {"watchers": {"type": "multi_users_select", "selected_users": ["U1", "U2"]}},
    "flags": {"flags": {"type": "checkboxes", "selected_options": [_option("f2", "Flag two")]}},
    "size": {"size": {"type": "radio_buttons", "selected_option": _option("m")}},
}

ANSWERS = {
    "name": "Anna",
    "notes": None,
    "count": 3,
    "price": 12.5,
    "email": "anna@example.com",
    "site": "https://example.com",
    "day": "2024-05-01",
    "at": "2024-05-01T12:00:00+00:00",
    "dept": "eng",
    "tags": ["x", "z"],
    "vendor": "us-acme",
    "vendors": [],
    "owner": "U0OWNER",
    "watchers": ["U1", "U2"],
    "flags": ["f2"],
    "size": "m",
}


def test_a_submission_parses_into_typed_answers() -> None:
    answers = parse_submission(EVERYTHING, STATE)
    assert answers == ANSWERS
    assert isinstance(answers["count"], int) and isinstance(answers["price"], float)
    assert EVERYTHING.validate(answers) == {}


def test_rendering_previous_answers_and_submitting_unchanged_gives_them_back() -> None:
    view = modal(EVERYTHING, answers=ANSWERS)
    assert_valid_modal(view)
    state = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        element, name = block["element"], block["block_id"]
        value: dict[str, Any] = {"type": element["type"]}
        if "initial_value" in element:
            value["value"] = element["initial_value"]
        for key, target in (
            ("initial_date", "selected_date"),
            ("initial_date_time", "selected_date_time"),
            ("initial_option", "selected_option"),
            ("initial_options", "selected_options"),
            ("initial_user", "selected_user"),
            ("initial_users", "selected_users"),
        ):
            if key in element:
                value[target] = element[key]
        state[name] = {element["action_id"]: value}
    assert parse_submission(EVERYTHING, state) == ANSWERS


def test_empty_and_missing_inputs_parse_as_none_or_empty_lists() -> None:
    answers = parse_submission(
        EVERYTHING,
        {
            "dept": {"dept": {"type": "static_select", "selected_option": None}},
            "owner": {"owner": {"type": "users_select", "selected_user": None}},
            "flags": {"flags": {"type": "checkboxes", "selected_options": []}},
        },
    )
    assert answers["dept"] is None and answers["owner"] is None and answers["name"] is None
    assert answers["flags"] == [] and answers["tags"] == [] and answers["watchers"] == []


def test_a_submission_of_one_page_parses_only_that_page() -> None:
    form = Form("Two", pages=[Page("a", [Text("x", "X")]), Page("b", [Number("n", "N")])])
    state = {"n": {"n": {"type": "number_input", "value": "-4"}}}
    assert parse_submission(form, state, page="b") == {"n": -4}


def test_validation_errors_become_a_response_keyed_by_block_id() -> None:
    answers = parse_submission(
        EVERYTHING, {**STATE, "email": {"email": {"type": "email_text_input", "value": "nope"}}}
    )
    errors = EVERYTHING.validate(answers)
    assert errors_response(errors) == {
        "response_action": "errors",
        "errors": {"email": "Enter a valid email address, like name@example.com."},
    }
    assert _input(modal(EVERYTHING), "email")["block_id"] == "email"


def test_external_select_suggestions_come_from_the_loader_with_the_payload() -> None:
    response = suggest_options(EVERYTHING, "vendor", "glo", PAYLOAD)
    assert response == {
        "options": [
            {"text": {"type": "plain_text", "text": "Globex", "emoji": True}, "value": "us-globex"}
        ]
    }


def test_render_options_caps_at_100_and_clips_texts() -> None:
    response = render_options([(str(i), "x" * 80) for i in range(150)])
    assert len(response["options"]) == 100
    assert len(response["options"][0]["text"]["text"]) == 75


# --- limits -----------------------------------------------------------------------------------


def test_view_limit_checks_name_what_slack_would_reject() -> None:
    view = modal(Form("F", [Text(f"f{i}", "F") for i in range(100)]))
    assert check_view_limits(view) == []
    view["title"]["text"] = "x" * 25
    view["blocks"].append(dict(view["blocks"][0]))
    problems = check_view_limits(view)
    assert "modal title: 25 characters, more than 24" in problems
    assert "modal: 101 blocks, more than 100" in problems
    assert "modal: block_id 'f0' used 2 times" in problems


def test_view_limit_checks_cover_options_and_labels() -> None:
    view = modal(Form("F", [Select("s", "S", ["a"])]))
    element = view["blocks"][0]["element"]
    element["options"] = [_option(str(i)) for i in range(101)]
    element["options"][0]["text"]["text"] = "t" * 76
    view["blocks"][0]["label"]["text"] = "l" * 2001
    problems = "\n".join(check_view_limits(view))
    assert "static_select has 101 options, more than 100" in problems
    assert "options[0].text: 76 characters, more than 75" in problems
    assert "label: 2001 characters, more than 2000" in problems


def test_message_limit_checks_count_50_blocks_and_text_lengths() -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "x"}} for _ in range(51)
    ]
    blocks[0]["text"]["text"] = "x" * 3001
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}})
    problems = check_message_limits(blocks)
    assert "message: 52 blocks, more than 50" in problems
    assert "blocks[0] (section).text: 3001 characters, more than 3000" in problems
    assert "blocks[51] (header).text: 151 characters, more than 150" in problems


def test_the_schema_helper_rejects_an_invalid_modal() -> None:
    view = modal(Form("F", [Text("a", "A")]))
    del view["submit"]  # a modal with inputs needs a submit button
    with pytest.raises(AssertionError, match="invalid modal"):
        assert_valid_modal(view)


def test_a_home_view_of_rendered_blocks_validates() -> None:
    blocks = assignment_message_blocks("Review expense", task_ref="t1", facts={"A": 1})
    assert_valid_home({"type": "home", "blocks": blocks})


# --- DM cards ---------------------------------------------------------------------------------


def test_an_approval_message_has_approve_and_decline_buttons_carrying_the_task() -> None:
    blocks = approval_message_blocks(
        "Expense approval",
        {"Amount": 120.5, "Who": "<@U1> & co"},
        task_ref="task-1",
        text="Anna asks for a refund.",
        note=texts.from_workflow("Expense"),
        open_label="Details",
    )
    assert_valid_blocks(blocks)
    actions = blocks[-1]["elements"]
    assert [(b["action_id"], b["value"], b.get("style")) for b in actions] == [
        ("flowbot_approve", "task-1", "primary"),
        ("flowbot_decline", "task-1", "danger"),
        ("flowbot_open", "task-1", None),
        ("flowbot_reassign", "task-1", None),
    ]
    assert blocks[2]["fields"][1]["text"] == "*Who*\n&lt;@U1&gt; &amp; co"


def test_an_assignment_message_shows_what_is_asked_an_open_and_a_reassign_button() -> None:
    payload = {"employee_name": "Anna", "amount": 12, "lines": [1, 2], "note": None}
    blocks = assignment_message_blocks(
        "Review expense",
        task_ref="task-2",
        text="Please review.",
        facts=payload_facts(payload),
    )
    assert_valid_blocks(blocks)
    assert blocks[2]["fields"][0]["text"] == "*Employee name*\nAnna"
    assert len(blocks[2]["fields"]) == 2
    open_button, reassign_button = blocks[-1]["elements"]
    assert (open_button["action_id"], open_button["value"]) == ("flowbot_open", "task-2")
    assert (reassign_button["action_id"], reassign_button["value"]) == ("flowbot_reassign", "task-2")
    without = assignment_message_blocks("Review expense", task_ref="task-2", reassign_label=None)
    assert [e["action_id"] for e in without[-1]["elements"]] == ["flowbot_open"]


def test_a_card_shows_at_most_20_facts() -> None:
    blocks = approval_message_blocks("Big", {str(i): i for i in range(25)}, task_ref="t")
    assert_valid_blocks(blocks)
    assert blocks[3]["elements"][0]["text"] == "…and 5 more"


def test_a_resolved_message_has_the_outcome_and_no_buttons() -> None:
    at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    blocks = resolved_message_blocks(
        "Expense approval", texts.declined_by("U123", at, "Too much"), facts={"Amount": 12}
    )
    assert_valid_blocks(blocks)
    assert all(b["type"] != "actions" for b in blocks)
    assert blocks[-1]["text"]["text"] == (
        ":x: Declined by <@U123> "
        "<!date^1714564800^{date_short_pretty} at {time}|2024-05-01 12:00 UTC>\n>Too much"
    )


def test_a_forms_facts_on_a_card_keep_the_authors_markup_and_escape_the_data() -> None:
    from bot.cards import form_facts, form_text
    from engine.forms import Facts as FormFacts

    payload = {"requester": "U0ANN", "reason": "<!channel> & co", "amount": 12}
    facts = form_facts(FormFacts({"Requested by": "<@{requester}>", "Reason": "{reason}", "Amount": 12}), payload)
    text = form_text("**Please** check {reason}", payload)
    blocks = approval_message_blocks("Access", facts, task_ref="t", text=text)
    assert_valid_blocks(blocks)
    assert [f["text"] for f in blocks[2]["fields"]] == [
        "*Requested by*\n<@U0ANN>", "*Reason*\n&lt;!channel&gt; &amp; co", "*Amount*\n12"]
    assert blocks[1]["text"]["text"] == "*Please* check &lt;!channel&gt; &amp; co"
    # Plain values (not rendered from a form's Facts) are still escaped as a whole.
    plain = approval_message_blocks("Access", {"Who": "<@U0ANN>"}, task_ref="t")
    assert plain[1]["fields"][0]["text"] == "*Who*\n&lt;@U0ANN&gt;"
