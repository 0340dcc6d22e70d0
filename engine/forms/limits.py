"""Slack Block Kit limits a form must respect to render as a modal.

They live in the engine (not in bot/) because forms are checked when workflows load, long
before any Slack call; bot/ imports the same numbers so both sides agree.
"""

from __future__ import annotations

#: Modal title, submit and close button texts.
MODAL_TITLE = 24
MODAL_BUTTON = 24
#: Blocks in one modal or Home tab view, and in one message.
VIEW_BLOCKS = 100
MESSAGE_BLOCKS = 50
#: Input block label and hint.
LABEL = 2000
HINT = 2000
#: Placeholder of any input element.
PLACEHOLDER = 150
#: Options of a static select / multi-select, and of checkboxes / radio buttons.
SELECT_OPTIONS = 100
CHOICE_OPTIONS = 10
#: Option object text and value.
OPTION_TEXT = 75
OPTION_VALUE = 150
#: block_id and action_id.
BLOCK_ID = 255
ACTION_ID = 255
#: Text of a section block, and of each of its fields (at most 10 fields).
SECTION_TEXT = 3000
SECTION_FIELD = 2000
SECTION_FIELDS = 10
#: Header block text.
HEADER_TEXT = 150
#: Context block elements.
CONTEXT_ELEMENTS = 10
#: Buttons: text, value; elements in one actions block.
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
ACTIONS_ELEMENTS = 25
#: plain_text_input min_length / max_length.
TEXT_INPUT = 3000
#: A view's private_metadata and callback_id.
PRIVATE_METADATA = 3000
CALLBACK_ID = 255
