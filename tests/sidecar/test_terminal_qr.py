"""The terminal QR renderer: the half blocks decode back to exactly segno's modules."""

from __future__ import annotations

import re

import pytest
import segno

from connector_sidecar._terminal_qr import BORDER, qr_lines

CONTENTS = [
    "sim://pair/cs_0123456789abcdef01234567",
    "https://liteapp.weixin.qq.com/q/7GiQu1?qrcode=" + "ab" * 16 + "&bot_type=3",
]


def modules(content: str) -> list[list[bool]]:
    qr = segno.make(content, error="l", micro=False)
    return [[bool(m) for m in row] for row in qr.matrix_iter(scale=1, border=BORDER)]


@pytest.mark.parametrize("content", CONTENTS)
def test_plain_half_blocks_decode_to_the_modules(content: str) -> None:
    """Without colour: a block is light, a space dark; ▀ is light above dark below, ▄ the reverse."""
    light = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    decoded: list[list[bool]] = []
    for line in qr_lines(content, color=False):
        pairs = [light[char] for char in line]
        decoded.append([not top for top, _ in pairs])
        decoded.append([not bottom for _, bottom in pairs])
    expected = modules(content)
    assert decoded[: len(expected)] == expected
    assert all(not dark for row in decoded[len(expected) :] for dark in row)  # padding is light


@pytest.mark.parametrize("content", CONTENTS)
def test_colour_cells_decode_to_the_modules(content: str) -> None:
    """With colour: each ▀ has the top module as foreground (30 dark) and the bottom as background."""
    decoded: list[list[bool]] = []
    for line in qr_lines(content, color=True):
        cells = re.findall(r"\x1b\[(\d+);(\d+)m▀", line)
        decoded.append([fg == "30" for fg, _ in cells])
        decoded.append([bg == "40" for _, bg in cells])
        assert line.endswith("\x1b[0m")
    expected = modules(content)
    assert decoded[: len(expected)] == expected
    assert len(expected[0]) <= 80  # a WeChat login URL fits an 80-column terminal
