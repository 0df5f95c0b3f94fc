"""Make Markdown safe for WeChat, which shows plain text (the reference's markdown filter).

Kept unchanged: code fences and inline code, tables, horizontal rules, ``**bold**``,
blockquotes, H1–H4, and italic/bold-italic around non-CJK text. Changed:

- italic or bold-italic markers (``*x*``, ``_x_``, ``***x***``, ``___x___``) around CJK text are
  removed, keeping the text;
- H5/H6 markers (``#####``, ``######``) are removed, keeping the heading text;
- images ``![alt](url)`` are dropped completely;
- a bare ``<`` (not starting a tag) becomes the full-width ``＜``: WeChat takes any ``<`` as a
  tag start and swallows the rest of the line. This rule is not in the protocol notes (2.4.9);
  it is in the reference repository's later ``src/messaging/markdown-filter.ts``.

The reference filters a stream character by character; we have the whole text, so this works
line by line with regular expressions and gives the same results on whole messages, with one
difference: the reference does not look at backticks inside a line, so it also rewrites italics,
images and ``<`` within inline code; we leave inline code as it is, as the notes' table says.
"""

from __future__ import annotations

import re

__all__ = ["wechat_safe_markdown"]

_FENCE = re.compile(r"^```")
_SMALL_HEADING = re.compile(r"^#{5,6} ")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_BOLD_ITALIC = re.compile(r"\*\*\*([^\n]+?)\*\*\*|___([^\n]+?)___")
_ITALIC = re.compile(r"(?<!\*)\*(?![\s*])([^*\n]+?)\*(?!\*)|(?<!_)_(?![\s_])([^_\n]+?)_(?!_)")
_BARE_LT = re.compile(r"<(?![A-Za-z/])")
_CJK = re.compile(r"[\u2E80-\u9FFF\uAC00-\uD7AF\uF900-\uFAFF]")


def _unwrap_cjk(match: re.Match[str]) -> str:
    content = next(g for g in match.groups() if g is not None)
    return content if _CJK.search(content) else match.group(0)


def _filter_text(text: str) -> str:
    text = _IMAGE.sub("", text)
    text = _BOLD_ITALIC.sub(_unwrap_cjk, text)
    text = _ITALIC.sub(_unwrap_cjk, text)
    return _BARE_LT.sub("\uff1c", text)


def _filter_line(line: str) -> str:
    line = _SMALL_HEADING.sub("", line)
    parts: list[str] = []
    pos = 0
    for code in _INLINE_CODE.finditer(line):
        parts.append(_filter_text(line[pos : code.start()]))
        parts.append(code.group(0))
        pos = code.end()
    parts.append(_filter_text(line[pos:]))
    return "".join(parts)


def wechat_safe_markdown(text: str) -> str:
    """``text`` with the changes above; everything inside code fences is left as it is."""
    out: list[str] = []
    in_fence = False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append(line)
        elif in_fence:
            out.append(line)
        else:
            body = line.rstrip("\r\n")
            out.append(_filter_line(body) + line[len(body) :])
    return "".join(out)
