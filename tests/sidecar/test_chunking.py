"""``split_text``: chunks rejoin to the text, fit the limit, and keep fenced code blocks whole."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_sidecar.chunking import split_text

FAST = settings(max_examples=200, deadline=None)

WORD = st.text(alphabet="abcdefghij", min_size=1, max_size=12)
PARAGRAPH = st.lists(WORD, min_size=1, max_size=30).map(" ".join)
CODE_LINE = st.text(alphabet="abc xyz=()#`~", max_size=30).filter(
    lambda line: not line.lstrip(" ").startswith(("```", "~~~"))
)


@st.composite
def fenced_block(draw: st.DrawFn) -> str:
    """A fenced code block: ``` or ~~~ (three or more), an optional info string, a few lines."""
    char = draw(st.sampled_from("`~"))
    fence = char * draw(st.integers(3, 5))
    info = draw(st.sampled_from(["", "python", "json"]))
    lines = draw(st.lists(CODE_LINE, min_size=0, max_size=6))
    return "".join([fence, info, "\n", *(f"{line}\n" for line in lines), fence])


@st.composite
def markdown(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]]]:
    """Paragraphs and fenced blocks joined by blank lines, with each fence's (start, end) span."""
    blocks = draw(
        st.lists(st.one_of(PARAGRAPH, fenced_block()).map(lambda b: b), min_size=1, max_size=12)
    )
    separators = draw(
        st.lists(
            st.sampled_from(["\n\n", "\n", "\n\n\n"]), min_size=len(blocks), max_size=len(blocks)
        )
    )
    text = ""
    fences: list[tuple[int, int]] = []
    for block, separator in zip(blocks, separators, strict=True):
        if block[:3] in ("```", "~~~"):
            if text and not text.endswith("\n"):
                text += "\n"
            fences.append((len(text), len(text) + len(block) + 1))  # the closing line's newline too
            text += block + "\n"
            text += separator[1:]
        else:
            text += block + separator
    return text, fences


def boundaries(chunks: list[str]) -> list[int]:
    """Offsets in the original text where one chunk ends and the next begins."""
    return list(itertools.accumulate(len(c) for c in chunks))[:-1]


@FAST
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=600), limit=st.integers(1, 120))
def test_chunks_rejoin_and_fit(text: str, limit: int) -> None:
    """Any text splits into non-empty chunks of at most ``limit`` that concatenate back to it."""
    chunks = split_text(text, limit)
    assert "".join(chunks) == text
    assert all(0 < len(chunk) <= limit for chunk in chunks)
    assert len(chunks) >= -(-len(text) // limit)


@FAST
@given(
    text=st.text(alphabet="ab \n`~x", max_size=600),
    limit=st.integers(1, 80),
)
def test_fence_heavy_text_rejoins_and_fits(text: str, limit: int) -> None:
    """Text full of stray fences, blank lines and spaces still rejoins and fits the limit."""
    chunks = split_text(text, limit)
    assert "".join(chunks) == text
    assert all(0 < len(chunk) <= limit for chunk in chunks)


@FAST
@given(doc=markdown(), data=st.data())
def test_no_boundary_inside_a_fence_that_fits(
    doc: tuple[str, list[tuple[int, int]]], data: st.DataObject
) -> None:
    """When every fenced block fits within the limit, no chunk boundary falls inside one."""
    text, fences = doc
    longest = max((end - start for start, end in fences), default=1)
    limit = data.draw(st.integers(max(longest, 20), max(longest, 20) * 4), label="limit")
    chunks = split_text(text, limit)
    assert "".join(chunks) == text
    assert all(len(chunk) <= limit for chunk in chunks)
    for cut in boundaries(chunks):
        for start, end in fences:
            assert not start < cut < end, (cut, text[start:end], chunks)


@FAST
@given(
    paragraphs=st.lists(PARAGRAPH, min_size=2, max_size=10),
    limit=st.integers(400, 1000),
)
def test_short_paragraphs_are_never_cut(paragraphs: list[str], limit: int) -> None:
    """Paragraphs shorter than the limit are never cut in the middle: chunks end at blank lines."""
    paragraphs = [p[:300] for p in paragraphs]
    text = "\n\n".join(paragraphs)
    chunks = split_text(text, limit)
    assert "".join(chunks) == text
    for cut in boundaries(chunks):
        assert text[cut - 1] == "\n", (cut, chunks)


# -- examples -------------------------------------------------------------------------------------


def test_short_text_is_one_chunk() -> None:
    """Text within the limit is one chunk, unchanged; empty text is no chunk."""
    assert split_text("hello", 5) == ["hello"]
    assert split_text("", 5) == []


def test_limit_must_be_positive() -> None:
    """A limit below 1 is a programming error."""
    with pytest.raises(ValueError, match="limit"):
        split_text("x", 0)


def test_breaks_at_paragraphs_first() -> None:
    """A paragraph break is preferred over a line break or a space."""
    text = "aaaa bbbb\ncccc\n\ndddd eeee"
    assert split_text(text, 18) == ["aaaa bbbb\ncccc\n\n", "dddd eeee"]


def test_an_early_paragraph_break_beats_cutting_a_paragraph_that_fits() -> None:
    """A paragraph that fits in a chunk of its own is moved whole, even if the chunk before is short."""
    second = "word " * 197 + "end"  # 988 characters: fits in a chunk, but not after the first
    text = "Sure, here it is:\n\n" + second
    assert split_text(text, 1000) == ["Sure, here it is:\n\n", second]


def test_a_paragraph_too_long_anyway_fills_the_chunk() -> None:
    """A paragraph that must be cut anyway is not pushed to the next chunk: no extra message."""
    long = "word " * 300  # 1500 characters: longer than the limit
    chunks = split_text("Sure!\n\n" + long, 1000)
    assert len(chunks) == 2
    assert chunks[0].startswith("Sure!\n\nword")
    assert chunks[0].endswith(" ")


def test_breaks_at_lines_then_spaces_then_hard() -> None:
    """Without paragraphs, lines; without lines, spaces; without spaces, the hard limit."""
    assert split_text("aaaa\nbbbb\ncccc", 10) == ["aaaa\nbbbb\n", "cccc"]
    assert split_text("aaaa bbbb cccc", 10) == ["aaaa bbbb ", "cccc"]
    assert split_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_keeps_a_code_block_whole() -> None:
    """A fenced block that fits in a chunk is moved whole to the next chunk."""
    text = "intro line\n\n```python\nx = 1\ny = 2\n```\n\noutro"
    chunks = split_text(text, 36)
    assert "".join(chunks) == text
    assert "```python\nx = 1\ny = 2\n```\n" in chunks[1]


def test_splits_an_oversized_block_between_its_lines() -> None:
    """A block longer than the limit is split, between its lines rather than mid-line."""
    code = "".join(f"line {i:02d}\n" for i in range(10))
    text = f"```\n{code}```\n"
    chunks = split_text(text, 30)
    assert "".join(chunks) == text
    assert all(len(c) <= 30 for c in chunks)
    assert all(c.endswith("\n") for c in chunks)


def test_a_longer_fence_is_not_closed_by_a_shorter_one() -> None:
    """Inside a ```` fence a ``` line is code, not the end of the block (CommonMark)."""
    block = "````\n```\nstill code\n```\n````\n"
    text = "before\n\n" + block + "\nafter"
    chunks = split_text(text, len(block) + 2)
    assert "".join(chunks) == text
    assert any(block in chunk for chunk in chunks), chunks


def test_whitespace_tail_is_folded_into_the_last_chunk() -> None:
    """Trailing whitespace that fits joins the last chunk instead of making a blank one."""
    assert split_text("aaaa bbb\n\n", 10) == ["aaaa bbb\n\n"]
    assert split_text("aaaa bbbb cc  ", 12) == ["aaaa bbbb ", "cc  "]


def test_wechat_sized_reply() -> None:
    """A 5000-character reply of paragraphs splits into three chunks within 2000."""
    text = "\n\n".join("word " * 99 + "end" for _ in range(10))
    chunks = split_text(text, 2000)
    assert len(chunks) == 3
    assert all(len(c) <= 2000 for c in chunks)
    assert all(c.endswith("\n\n") for c in chunks[:-1])
