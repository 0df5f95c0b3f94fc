"""Markdown replies as Feishu posts: one md row per run of text and per fenced code block."""

from __future__ import annotations

import json

import pytest

from connector_sidecar.drivers.feishu.markdown import post_content, post_rows


def test_code_fences_get_rows_of_their_own() -> None:
    """Text, a ``` block, text, a ~~~ block, text: five rows in order, fences kept."""
    text = "Intro **bold**\n\n```python\nprint(1)\n```\nAfter the code.\n~~~\nraw\n~~~\n\nThe end."
    assert post_rows(text) == [
        "Intro **bold**",
        "```python\nprint(1)\n```",
        "After the code.",
        "~~~\nraw\n~~~",
        "The end.",
    ]


def test_fences_follow_commonmark() -> None:
    """A shorter or other-character fence line inside a block is code; indented fences count."""
    text = "````\n```\nstill code\n~~~\n````\ntail\n   ```\nx\n   ```"
    assert post_rows(text) == ["````\n```\nstill code\n~~~\n````", "tail", "   ```\nx\n   ```"]


def test_a_block_left_open_is_closed_in_its_row() -> None:
    """A chunk that ends inside a code block closes it, so nothing after it is swallowed."""
    assert post_rows("see:\n```js\nlet a = 1;") == ["see:", "```js\nlet a = 1;\n```"]


@pytest.mark.parametrize("text", ["plain text", "inline `code` only", "  "])
def test_text_without_fences_is_one_row(text: str) -> None:
    """No fence: one md element holding the text as it is."""
    assert post_rows(text) == [text]


def test_post_content_is_a_locale_map_of_md_rows() -> None:
    """The content string: zh_cn, empty title, one [md] list per row, no post wrapper."""
    content = json.loads(post_content("a\n```\nb\n```\nc"))
    assert content == {
        "zh_cn": {
            "title": "",
            "content": [
                [{"tag": "md", "text": "a"}],
                [{"tag": "md", "text": "```\nb\n```"}],
                [{"tag": "md", "text": "c"}],
            ],
        }
    }
