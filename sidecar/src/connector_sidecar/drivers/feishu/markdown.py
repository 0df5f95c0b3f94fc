"""A Markdown reply as a Feishu ``post``: one ``md`` row per run of text, one per code block.

A post with ``md`` elements renders Markdown [3rd-party, widely used; the stored docs only show
text/a/at tags]. Its ``content`` is a list of rows (paragraphs), each a list of elements. Put
whole in one ``md`` element, the text right after a code fence may be swallowed by Feishu's
clients [sdk: lark-oapi's channel layer says so, and splits the same way]; so the text is split
at the fences and each fenced block (fence lines included) is a row of its own, between rows of
the text around it. Fences follow CommonMark, as ``chunking.py`` reads them: ``` or ~~~ with up to 3 spaces of
indent; a closing fence is of the same character and at least as long. A block left open (a
chunk can end inside an oversized one) is closed in its row, so no row leaks into the next.

No outer ``{"post": …}`` wrapper: that is a 230001 [sdk].
"""

from __future__ import annotations

import json
import re

__all__ = ["post_content", "post_rows"]

_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")


def _closes(line: str, fence: str) -> bool:
    match = _FENCE.match(line)
    return bool(match and match.group(1).startswith(fence) and line.strip().strip(fence[0]) == "")


def post_rows(text: str) -> list[str]:
    """``text`` cut into the texts of its rows: outside fences and fenced blocks, in order.

    Blank-only runs between blocks are dropped; the rows concatenate back to ``text`` minus
    those runs and line ends at the cuts (plus a closing fence for a block left open).
    """
    rows: list[str] = []
    current: list[str] = []
    fence: str | None = None

    def flush() -> None:
        row = "".join(current).strip("\n")
        if row.strip():
            rows.append(row)
        current.clear()

    for line in text.splitlines(keepends=True):
        if fence is None:
            match = _FENCE.match(line)
            if match:
                flush()
                fence = match.group(1)
            current.append(line)
        else:
            current.append(line)
            if _closes(line, fence):
                fence = None
                flush()
    if fence is not None:
        if current and not current[-1].endswith("\n"):
            current.append("\n")
        current.append(fence)
    flush()
    return rows or [text]


def post_content(text: str) -> str:
    """The JSON *string* ``content`` of a ``post`` message holding Markdown ``text``."""
    rows = [[{"tag": "md", "text": row}] for row in post_rows(text)]
    return json.dumps({"zh_cn": {"title": "", "content": rows}}, ensure_ascii=False)
