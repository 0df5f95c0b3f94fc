"""Split long content into chunks within a vendor's limit (docs/CONTRACT.md §4).

Rules, in order of preference: break after a blank line (paragraph), else after a line, else
after whitespace, else hard at the limit. A line that fits in a chunk of its own is never cut,
even if that makes the chunk before it short. Never break inside a fenced code block (``` or
~~~) unless that block alone does not fit in one chunk; then break between its lines.

Chunks concatenate back to the exact original text. Whitespace-only tails are folded into the
previous chunk where that stays within the limit, so no chunk is blank.
"""

from __future__ import annotations

import re

__all__ = ["split_text"]

_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")

# Break priorities: higher is better.
_PARAGRAPH, _LINE, _SPACE, _IN_FENCE_LINE = 3, 2, 1, 0


def _break_points(text: str) -> dict[int, int]:
    """Positions (index just after the break) where a chunk may end, with their priority."""
    points: dict[int, int] = {}
    in_fence: str | None = None
    pos = 0
    for line in text.splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        match = _FENCE.match(line)
        if in_fence is None:
            if match:
                # The whole run: a closing fence must be at least as long (CommonMark), so a
                # ``` line inside a ```` block is code, not the block's end.
                in_fence = match.group(1)
            else:
                for i, ch in enumerate(line[:-1] if line.endswith("\n") else line):
                    if ch in " \t":
                        points[start + i + 1] = _SPACE
        elif (
            match and match.group(1).startswith(in_fence) and line.strip().strip(in_fence[0]) == ""
        ):
            in_fence = None
            points[pos] = _LINE
            continue
        if not line.endswith("\n"):
            continue
        if in_fence is not None:
            points[pos] = max(points.get(pos, -1), _IN_FENCE_LINE)
        elif line.strip() == "":
            points[pos] = _PARAGRAPH
            # The line that ended just before a blank line is also a paragraph end.
            if start in points:
                points[start] = max(points[start], _PARAGRAPH)
        else:
            points[pos] = max(points.get(pos, -1), _LINE)
    return points


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters; ``"".join(result) == text``."""
    if limit < 1:
        raise ValueError("limit must be positive")
    if len(text) <= limit:
        return [text] if text else []
    points = _break_points(text)
    chunks: list[str] = []
    start = 0
    while len(text) - start > limit:
        end = _best_break(points, start, start + limit, len(text))
        chunks.append(text[start:end])
        start = end
    tail = text[start:]
    if tail:
        if tail.strip() == "" and chunks and len(chunks[-1]) + len(tail) <= limit:
            chunks[-1] += tail
        else:
            chunks.append(tail)
    return chunks


def _best_break(points: dict[int, int], start: int, hard_end: int, text_end: int) -> int:
    """Where the chunk starting at ``start`` should end (at most ``hard_end``).

    A paragraph or line boundary in the second half of the window, so chunks stay large. Else
    the last such boundary in the first half, when the line after it fits in the next chunk:
    cutting that line would go against docs/CONTRACT.md §4 for no gain. Else a space (second half
    first), then that early boundary anyway, then a line inside an oversized code fence, else
    the hard limit.
    """
    limit = hard_end - start
    middle = start + limit // 2

    def last(wanted: int, low: int, high: int = hard_end) -> int | None:
        for pos in range(high, low, -1):
            if points.get(pos, -1) >= wanted:
                return pos
        return None

    found = last(_PARAGRAPH, middle) or last(_LINE, middle)
    if found:
        return found
    early = last(_PARAGRAPH, start) or last(_LINE, start)
    if early:
        reach = early + limit
        if reach >= text_end or last(_LINE, hard_end, reach) is not None:
            return early
    found = last(_SPACE, middle) or last(_SPACE, start) or early or last(_IN_FENCE_LINE, start)
    return found or hard_end
