"""Forms are data: fields, display blocks, pages, validation rules and the Approval shortcut.

Stage authors write ``from engine.forms import Form, Text, Number, ...``; bot/ renders a form
as a Slack modal and the web console as HTML, both from the same definition.
"""

from __future__ import annotations

from engine.forms.approval import APPROVED, DECLINED, Approval
from engine.forms.checks import block_count
from engine.forms.choices import (
    Checkboxes,
    ChoiceField,
    MultiSelect,
    Option,
    OptionsLoader,
    OptionSpec,
    Radio,
    Select,
)
from engine.forms.display import Display, Facts, Links, Markdown
from engine.forms.errors import FormError
from engine.forms.fields import (
    Date,
    DateTime,
    Email,
    Field,
    LongText,
    Number,
    Text,
    Url,
    UserPicker,
    Validator,
    is_empty,
    parse_number,
)
from engine.forms.form import MAIN_PAGE, Form, Item, Page
from engine.forms.templates import fill_template, lookup
from engine.forms.validation import Rule

__all__ = [
    "APPROVED",
    "DECLINED",
    "MAIN_PAGE",
    "Approval",
    "Checkboxes",
    "ChoiceField",
    "Date",
    "DateTime",
    "Display",
    "Email",
    "Facts",
    "Field",
    "Form",
    "FormError",
    "Item",
    "Links",
    "LongText",
    "Markdown",
    "MultiSelect",
    "Number",
    "Option",
    "OptionSpec",
    "OptionsLoader",
    "Page",
    "Radio",
    "Rule",
    "Select",
    "Text",
    "Url",
    "UserPicker",
    "Validator",
    "block_count",
    "fill_template",
    "is_empty",
    "lookup",
    "parse_number",
]
