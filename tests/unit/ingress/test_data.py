"""DATA framing: the end of data, dot-unstuffing, smuggling, and the size and line limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolgate.ingress.data import BARE_NEWLINE, END, DataAssembler, DataOutcome, unstuff

MAX_SIZE = 4096
MAX_LINE = 1000
PIPELINED = b"MAIL FROM:<next@example.test>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n"
FUZZ = settings(max_examples=200, deadline=None, database=None)


def run(chunks: list[bytes], max_size: int = MAX_SIZE,
        max_line: int = MAX_LINE) -> tuple[DataOutcome, bytes]:
    """Feed *chunks* until the assembler answers; return its outcome and every byte after the end."""
    assembler = DataAssembler(max_size, max_line)
    for index, chunk in enumerate(chunks):
        outcome = assembler.feed(chunk)
        if outcome is not None:
            return outcome, outcome.leftover + b"".join(chunks[index + 1:])
    raise AssertionError("the end of data was never seen")


def wire(lines: list[bytes]) -> bytes:
    """What a client sends after DATA's 354: each line stuffed as RFC 5321 4.5.2 asks, then '.'."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines) + b".\r\n"


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def test_empty_message() -> None:
    outcome, after = run([b".\r\n"])
    assert outcome == DataOutcome(b"", None, b"")
    assert after == b""


def test_normal_message() -> None:
    message = b"From: a@example.test\r\nSubject: hello\r\n\r\nHello,\r\n\r\nbye\r\n"
    outcome, after = run([message + b".\r\n"])
    assert outcome == DataOutcome(message, None, b"")


def test_dot_unstuffing() -> None:
    sent = (b"..leading dot on the first line\r\n"
            b"..\r\n"
            b"...\r\n"
            b"....four\r\n"
            b"a.b\r\n"
            b" .space first\r\n"
            b".single dot from a client that forgot to stuff\r\n"
            b"end.\r\n"
            b".\r\n")
    outcome, _ = run([sent])
    assert outcome.refusal is None
    assert outcome.data == (b".leading dot on the first line\r\n"
                            b".\r\n"
                            b"..\r\n"
                            b"...four\r\n"
                            b"a.b\r\n"
                            b" .space first\r\n"
                            b"single dot from a client that forgot to stuff\r\n"
                            b"end.\r\n")


def test_first_line_of_dots() -> None:
    outcome, _ = run([b"...\r\nx\r\n.\r\n"])
    assert outcome.data == b"..\r\nx\r\n"
    assert unstuff(b"..\r\n") == b".\r\n"
    assert unstuff(b"") == b""


def test_lines_that_look_like_the_end_but_are_not() -> None:
    outcome, _ = run([b"a\r\n. \r\n.x\r\n..\r\n .\r\n.\r\n"])
    assert outcome == DataOutcome(b"a\r\n \r\nx\r\n.\r\n .\r\n", None, b"")


def test_terminator_split_at_every_boundary() -> None:
    sent = wire([b"Subject: x", b"", b".dot", b"body"]) + PIPELINED
    expected = b"Subject: x\r\n\r\n.dot\r\nbody\r\n"
    for first in range(len(sent) + 1):
        for second in range(first, len(sent) + 1, 3):
            outcome, after = run([sent[:first], sent[first:second], sent[second:]])
            assert (outcome.data, outcome.refusal, after) == (expected, None, PIPELINED), \
                (first, second)


def test_byte_by_byte() -> None:
    message = wire([b"Subject: x", b"", b"..", b"."])
    sent = message + PIPELINED
    assembler = DataAssembler(MAX_SIZE, MAX_LINE)
    end = len(message)
    for position in range(end - 1):
        assert assembler.feed(sent[position:position + 1]) is None
    outcome = assembler.feed(sent[end - 1:end])
    assert outcome == DataOutcome(b"Subject: x\r\n\r\n..\r\n.\r\n", None, b"")
    outcome, after = run(bytewise(sent))
    assert after == PIPELINED


def test_pipelined_commands_after_the_end_are_returned() -> None:
    outcome, _ = run([b"hi\r\n.\r\n" + PIPELINED])
    assert outcome == DataOutcome(b"hi\r\n", None, PIPELINED)
    # Even when what follows is itself a data terminator.
    outcome, _ = run([b"hi\r\n.\r\n.\r\n"])
    assert (outcome.data, outcome.leftover) == (b"hi\r\n", b".\r\n")


_LINE = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b".", b"..", b".x", b"...", b"QUIT", b"x."]))


@FUZZ
@given(lines=st.lists(_LINE, max_size=20), after=st.binary(max_size=60), data=st.data())
def test_any_message_any_chunking(lines: list[bytes], after: bytes, data: st.DataObject) -> None:
    sent = wire(lines) + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(sent)), max_size=12)))
    chunks = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True)]
    outcome, rest = run(chunks)
    assert outcome.refusal is None
    assert outcome.data == b"".join(line + b"\r\n" for line in lines)
    assert rest == after


# -- smuggling ------------------------------------------------------------------------------------

FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\n", b"\r\n.\n", b"\n.\r"]


@pytest.mark.parametrize("fake", FAKE_ENDS, ids=repr)
def test_fake_ends_never_end_the_message_and_get_it_refused(fake: bytes) -> None:
    sent = (b"Subject: x\r\n\r\nfirst" + fake + PIPELINED
            + b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n" + b"QUIT\r\n")
    assembler = DataAssembler(MAX_SIZE, MAX_LINE)
    real_end = sent.index(END) + len(END)
    for position in range(real_end - 1):
        assert assembler.feed(sent[position:position + 1]) is None, position
    outcome = assembler.feed(sent[real_end - 1:])
    assert outcome is not None
    assert (outcome.refusal.code, outcome.refusal.enhanced) == (550, "5.5.2")
    assert outcome.refusal == BARE_NEWLINE
    assert outcome.data == b""
    assert outcome.leftover == b"QUIT\r\n"
    outcome, after = run([sent])
    assert (outcome.refusal, after) == (BARE_NEWLINE, b"QUIT\r\n")


@pytest.mark.parametrize("bare", [b"\r", b"\n", b"\r\r\n", b"\n\r"], ids=repr)
def test_any_bare_cr_or_lf_refuses_the_message(bare: bytes) -> None:
    outcome, _ = run([b"a" + bare + b"b\r\n.\r\n"])
    assert outcome.refusal == BARE_NEWLINE
    outcome, _ = run([b"a\r\nb" + bare + b"\r\n.\r\n"])  # right before the end
    assert outcome.refusal == BARE_NEWLINE


@FUZZ
@given(st.binary(max_size=80).map(lambda b: b.translate(bytes.maketrans(b"abc", b"\r\n."))),
       st.binary(max_size=20))
def test_the_message_ends_at_the_first_real_end_only(body: bytes, after: bytes) -> None:
    sent = body + END + after
    first_end = (b"\r\n" + sent).find(END)  # the framing CRLF belongs to the DATA command
    outcome, rest = run(bytewise(sent))
    assert rest == (b"\r\n" + sent)[first_end + len(END):]
    content = (b"\r\n" + sent)[2:first_end + 2]
    bare = content.count(b"\r") != content.count(b"\r\n") or \
        content.count(b"\n") != content.count(b"\r\n")
    assert (outcome.refusal == BARE_NEWLINE) == bare
    if not bare:
        lines = content.split(b"\r\n")[:-1]
        assert outcome.data == b"".join(line.removeprefix(b".") + b"\r\n" for line in lines)


# -- size -----------------------------------------------------------------------------------------

def _message_of(size: int) -> bytes:
    """A message of *size* octets in short lines."""
    body = (b"x" * 62 + b"\r\n") * ((size - 2) // 64)
    return body + b"y" * (size - len(body) - 2) + b"\r\n"


def test_message_of_exactly_the_size_limit_is_accepted() -> None:
    message = _message_of(MAX_SIZE)
    assert len(message) == MAX_SIZE
    outcome, _ = run([message + b".\r\n"])
    assert outcome == DataOutcome(message, None, b"")


@pytest.mark.parametrize("size", [MAX_SIZE + 1, MAX_SIZE + 5, 3 * MAX_SIZE, 300 * MAX_SIZE])
def test_oversized_message_is_refused_and_discarded_but_framing_is_kept(size: int) -> None:
    sent = _message_of(size) + b".\r\n" + PIPELINED
    assembler = DataAssembler(MAX_SIZE, MAX_LINE)
    chunk = 1000
    outcome = None
    for start in range(0, len(sent), chunk):
        outcome = assembler.feed(sent[start:start + chunk])
        # What is past the limit is thrown away as it comes, not kept until the end.
        assert len(assembler._buffer) <= MAX_SIZE + len(END) + 2 + chunk
        if outcome is not None:
            rest = sent[start + chunk:]
            break
    assert outcome is not None
    assert (outcome.refusal.code, outcome.refusal.enhanced) == (552, "5.3.4")
    assert str(MAX_SIZE) in outcome.refusal.text
    assert outcome.data == b""
    assert outcome.leftover + rest == PIPELINED


def test_oversized_message_byte_by_byte_keeps_the_terminator() -> None:
    sent = _message_of(MAX_SIZE + 100) + b".\r\n" + PIPELINED
    outcome, after = run(bytewise(sent))
    assert outcome.refusal.code == 552
    assert after == PIPELINED


@FUZZ
@given(size=st.integers(MAX_SIZE - 3, 3 * MAX_SIZE), after=st.binary(max_size=30), data=st.data())
def test_size_limit_under_any_chunking(size: int, after: bytes, data: st.DataObject) -> None:
    sent = _message_of(size) + b".\r\n" + after
    cuts = sorted(data.draw(st.lists(st.integers(0, len(sent)), max_size=8)))
    chunks = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True)]
    outcome, rest = run(chunks)
    assert rest == after
    if size > MAX_SIZE:
        assert outcome.refusal.code == 552
    else:
        assert (outcome.refusal, len(outcome.data)) == (None, size)


# -- line length ----------------------------------------------------------------------------------

def _line_refused(outcome: DataOutcome) -> bool:
    if outcome.refusal is None:
        return False
    assert (outcome.refusal.code, outcome.refusal.enhanced) == (500, "5.5.2")
    assert str(MAX_LINE) in outcome.refusal.text
    return True


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_line_limit_counts_the_crlf(position: str) -> None:
    """RFC 5321 4.5.3.1.6: 1000 octets including CRLF; 998 characters of text."""
    for length, refused in ((MAX_LINE - 2, False), (MAX_LINE - 1, True), (MAX_LINE + 500, True)):
        line = b"z" * length
        lines = {"first": [line, b"a", b"b"], "middle": [b"a", line, b"b"],
                 "last": [b"a", b"b", line]}[position]
        outcome, after = run([wire(lines) + PIPELINED], max_size=10 * MAX_LINE)
        assert _line_refused(outcome) is refused, (length, position)
        assert after == PIPELINED
        if not refused:
            assert outcome.data == b"".join(item + b"\r\n" for item in lines)


@pytest.mark.parametrize("position", ["first", "middle"])
def test_a_stuffed_dot_does_not_count_against_the_line_limit(position: str) -> None:
    for text_length, refused in ((MAX_LINE - 2, False), (MAX_LINE - 1, True)):
        line = b"." + b"d" * (text_length - 1)  # sent as ".." + ..., one octet over on the wire
        lines = [line, b"b"] if position == "first" else [b"a", line, b"b"]
        sent = wire(lines)
        assert max(map(len, sent.split(b"\r\n"))) == text_length + 1
        outcome, _ = run([sent], max_size=10 * MAX_LINE)
        assert _line_refused(outcome) is refused, (text_length, position)
        if not refused:
            assert outcome.data == b"".join(item + b"\r\n" for item in lines)


def test_only_one_dot_is_forgiven() -> None:
    outcome, _ = run([b"..." + b"e" * (MAX_LINE - 3) + b"\r\n.\r\n"], max_size=10 * MAX_LINE)
    assert _line_refused(outcome)
