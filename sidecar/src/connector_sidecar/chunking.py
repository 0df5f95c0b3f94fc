"""Split long content into chunks within a vendor's limit (CONTRACT §4).

Rules, in order of preference: break after a blank line (paragraph), else after a line, else
after whitespace, else hard at the limit. Never break inside a fenced code block (``` or ~~~)
unless that block alone does not fit in one chunk; then break between its lines.

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
                in_fence = match.group(1)[0] * 3
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
        end = _best_break(points, start, start + limit)
        chunks.append(text[start:end])
        start = end
    tail = text[start:]
    if tail:
        if tail.strip() == "" and chunks and len(chunks[-1]) + len(tail) <= limit:
            chunks[-1] += tail
        else:
            chunks.append(tail)
    return chunks


def _best_break(points: dict[int, int], start: int, hard_end: int) -> int:
    """Where the chunk starting at ``start`` should end (at most ``hard_end``).

    Prefer the best boundary in the second half of the window, so chunks stay large; else any
    boundary outside a code fence; else a line inside an oversized fence; else the hard limit.
    """
    middle = start + (hard_end - start) // 2
    for wanted in (_PARAGRAPH, _LINE, _SPACE):
        for pos in range(hard_end, middle, -1):
            if points.get(pos, -1) >= wanted:
                return pos
    early = [(points[p], p) for p in range(start + 1, middle + 1) if points.get(p, -1) >= _SPACE]
    if early:
        return max(early)[1]
    for pos in range(hard_end, start, -1):
        if pos in points:
            return pos
    return hard_end
