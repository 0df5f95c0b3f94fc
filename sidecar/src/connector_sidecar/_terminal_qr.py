"""QR codes drawn in a terminal with half-block characters (``▀``): two modules per character
cell vertically, so a WeChat login QR (version 5, 37 modules plus a 2-module quiet zone) takes
41 columns and 21 lines and fits an 80-column terminal.

With ``color`` (a terminal), every cell is ``▀`` with its top module as the foreground and its
bottom module as the background colour, black on white whatever the terminal's theme. Without
(a pipe, ``NO_COLOR``), light modules are drawn as blocks and dark ones as spaces, the usual
convention for dark terminal backgrounds (``qrencode -t UTF8``).
"""

from __future__ import annotations

import segno

__all__ = ["qr_lines"]

BORDER = 2  # scanners cope with less than the standard 4; it keeps the code small
_UPPER, _LOWER, _FULL = "▀", "▄", "█"
_FG = {True: "30", False: "97"}  # dark module: black; light: bright white
_BG = {True: "40", False: "107"}
_RESET = "\x1b[0m"


def qr_lines(content: str, *, color: bool) -> list[str]:
    """The QR code of ``content`` as lines of text, without trailing newlines."""
    qr = segno.make(content, error="l", micro=False)
    rows = [[bool(module) for module in row] for row in qr.matrix_iter(scale=1, border=BORDER)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))  # the last half line: light, like the quiet zone
    lines: list[str] = []
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        if color:
            cells = (f"\x1b[{_FG[t]};{_BG[b]}m{_UPPER}" for t, b in zip(top, bottom, strict=True))
            lines.append("".join(cells) + _RESET)
        else:
            lines.append("".join(_plain(t, b) for t, b in zip(top, bottom, strict=True)))
    return lines


def _plain(top_dark: bool, bottom_dark: bool) -> str:
    if top_dark and bottom_dark:
        return " "
    if top_dark:
        return _LOWER
    if bottom_dark:
        return _UPPER
    return _FULL
