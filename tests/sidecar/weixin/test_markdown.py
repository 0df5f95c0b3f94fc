"""The WeChat-safe Markdown filter: what is kept, what is removed."""

from __future__ import annotations

import pytest

from connector_sidecar.drivers.weixin.markdown import wechat_safe_markdown


@pytest.mark.parametrize(
    "text",
    [
        "# H1\n## H2\n### H3\n#### H4",
        "**bold** and **粗体**",
        "> a quote\n> 引用",
        "| a | b |\n|---|---|\n| 1 | 2 |",
        "---\n***\n___",
        "*italic* and _emphasis_ and ***both***",
        "`*中文*` stays code",
        "a <b>tag</b> and </i>",
        "- item\n* item\n  * nested",
        "snake_case_name and 2 * 3 * 4",
    ],
)
def test_kept_unchanged(text: str) -> None:
    """Fences, inline code, tables, rules, bold, quotes, H1–H4, non-CJK italics: unchanged."""
    assert wechat_safe_markdown(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*中文* text", "中文 text"),
        ("_强调_", "强调"),
        ("***重要***", "重要"),
        ("___重要___", "重要"),
        ("mixed *with 中文* here", "mixed with 中文 here"),
        ("##### 小标题", "小标题"),
        ("###### Tiny", "Tiny"),
        ("see ![chart](https://x.test/c.png) here", "see  here"),
        ("a < b and 1<2", "a ＜ b and 1＜2"),
    ],
)
def test_changed(text: str, expected: str) -> None:
    """CJK italics lose their markers, H5/H6 lose theirs, images go, bare < goes full-width."""
    assert wechat_safe_markdown(text) == expected


def test_code_fences_are_left_alone() -> None:
    """Nothing inside a fenced block is touched; line endings are kept."""
    text = "before *中文*\r\n```python\n##### not a heading\n*中文* ![x](y) a < b\n```\nafter ##### x\n"
    assert wechat_safe_markdown(text) == (
        "before 中文\r\n```python\n##### not a heading\n*中文* ![x](y) a < b\n```\nafter ##### x\n"
    )
