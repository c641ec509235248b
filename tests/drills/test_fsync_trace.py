"""Durability at the system-call level: every ``250 queued as QID`` follows an fsync of its data.

The gateway runs under ``strace -f``. For each 250 it writes to a client socket,
the trace must show, in this order: the SQLite transaction that first wrote the
queue ID into the WAL (up to and including its commit frame), an ``fsync`` or
``fdatasync`` of the WAL, and only then the write of the 250.

Order is the order of lines in the trace file. strace handles one stop at a
time, and the session thread can only write the 250 after the commit thread,
released from its fsync's exit stop, has woken the event loop; so a line's
place in the file follows causality between threads. A call that another
thread interrupts shows as ``<unfinished ...>`` where it starts and
``<... resumed>`` where it ends; the checker takes an fsync's end and a write's
start. Only the SQLite store is traced: PostgreSQL fsyncs in its own server.
"""

from __future__ import annotations

import re
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gateway_process import GatewayProcess

pytestmark = pytest.mark.drill

QUEUED = re.compile(rb"250 2\.0\.0 Ok: queued as ([0-9A-Z]{14})\r\n")
LINE = re.compile(r"^(\d+)\s+(?:[\d:.]+\s+)?(.*)$")
RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
CALL = re.compile(r"^(\w+)\((\d+)<([^>]*)>(.*)$")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)")
_SIMPLE_ESCAPES = {"n": 10, "r": 13, "t": 9, "v": 11, "f": 12, "a": 7, "b": 8}
WRITES = {"write", "pwrite64", "writev", "pwritev", "pwritev2", "sendto", "sendmsg"}
SYNCS = {"fsync", "fdatasync"}
WAL_FRAME_HEADER = 24


def unescape(text: str) -> bytes:
    """Bytes of one strace string literal (C escapes, octal and hex)."""
    def byte(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code[0].isdigit():
            return chr(int(code, 8))
        return chr(_SIMPLE_ESCAPES.get(code, ord(code)))
    return ESCAPE.sub(byte, text).encode("latin-1", "replace")


@dataclass
class Call:
    """One traced system call on a file descriptor, with where it starts and ends in the trace."""

    pid: int
    name: str
    path: str
    data: bytes
    start: int
    end: int | None = None


def parse_trace(text: str) -> list[Call]:
    """The write and sync calls of an ``strace -f -y`` trace, in order of their start."""
    calls: list[Call] = []
    pending: dict[int, Call] = {}
    for index, line in enumerate(text.splitlines()):
        match = LINE.match(line)
        if match is None:
            continue
        pid, rest = int(match.group(1)), match.group(2)
        resumed = RESUMED.match(rest)
        if resumed:
            call = pending.pop(pid, None)
            if call is not None:
                call.end = index
            continue
        call_match = CALL.match(rest)
        if call_match is None or call_match.group(1) not in WRITES | SYNCS:
            continue
        name, _fd, path, args = call_match.groups()
        call = Call(pid, name, path,
                    b"".join(unescape(s) for s in STRING.findall(args)), start=index)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = call
        else:
            call.end = index
        calls.append(call)
    return calls


def transaction_end(writes: list[Call], first: int) -> Call | None:
    """The page write of the commit frame that closes the transaction holding ``writes[first]``.

    SQLite writes each WAL frame as a 24-byte header and then the page; bytes 4-7 of
    the header are non-zero only in a transaction's commit frame.
    """
    for position in range(max(first - 1, 0), len(writes) - 1):
        header = writes[position]
        if len(header.data) == WAL_FRAME_HEADER and header.data[4:8] != b"\0\0\0\0":
            return writes[position + 1]
    return None


@dataclass
class Report:
    checked: set[str]
    violations: list[str]


def check_durable_replies(calls: list[Call], database: str) -> Report:
    """Check that an fsync of the WAL lies between the commit of each queue ID and its 250.

    The store runs in WAL mode (DESIGN.md), so a committed message is durable once
    ``DATABASE-wal`` is synced; a sync of the database file itself would not cover it.
    """
    wal = database + "-wal"
    wal_writes = [c for c in calls if c.name in WRITES and c.path == wal and c.end is not None]
    wal_syncs = [c for c in calls if c.name in SYNCS and c.path == wal and c.end is not None]
    report = Report(set(), [])
    for reply in (c for c in calls if c.name in WRITES and QUEUED.search(c.data)):
        queue_id = QUEUED.search(reply.data).group(1).decode()
        report.checked.add(queue_id)
        first = next((n for n, w in enumerate(wal_writes) if queue_id.encode() in w.data), None)
        if first is None or wal_writes[first].start > reply.start:
            report.violations.append(f"{queue_id}: 250 written before any WAL write of it")
            continue
        commit = transaction_end(wal_writes, first)
        if commit is None or commit.start > reply.start:
            report.violations.append(f"{queue_id}: 250 written before its commit frame")
            continue
        if not any(commit.end < s.start and s.end < reply.start for s in wal_syncs):
            report.violations.append(f"{queue_id}: no fsync of the WAL between its commit frame "
                                     f"(trace line {commit.end + 1}) and its 250 "
                                     f"(trace line {reply.start + 1})")
    return report


def send_distinct_messages(port: int, client: int, count: int, queue_ids: list[str],
                           errors: list[str]) -> None:
    try:
        send_messages(port, client, count, queue_ids)
    except Exception as error:  # asserted on by the test
        errors.append(f"client {client}: {error!r}")


def send_messages(port: int, client: int, count: int, queue_ids: list[str]) -> None:
    """One connection per message, so that SO_REUSEPORT spreads them over every process."""
    for number in range(count):
        body = (f"Subject: fsync trace {client}-{number}\r\n\r\n"
                f"distinctive body of message {client}-{number}\r\n").encode()
        with smtplib.SMTP("127.0.0.1", port, local_hostname=f"c{client}.trace.test",
                          timeout=60) as smtp:
            smtp.ehlo()
            smtp.mail("<trace@src.test>")
            smtp.rcpt("<user@example.test>")
            code, text = smtp.data(body)
            match = re.match(rb"2\.0\.0 Ok: queued as ([0-9A-Z]{14})$", text)
            assert code == 250 and match, (code, text)
            queue_ids.append(match.group(1).decode())


@pytest.mark.parametrize("workers", [1, 2], ids=["1worker", "2workers"])
def test_every_250_follows_an_fsync_of_its_committed_data(
        workers: int, gateway_factory: Callable[..., GatewayProcess], folder: Path) -> None:
    trace_file = folder / "strace.txt"
    gateway = gateway_factory(smtp={"workers": workers}, wrapper=[
        "strace", "-f", "-tt", "-y", "-s", "65536", "--seccomp-bpf", "-o", str(trace_file),
        "-e", "trace=fsync,fdatasync,write,pwrite64,writev,pwritev,pwritev2,sendto,sendmsg"])
    queue_ids: list[str] = []
    errors: list[str] = []
    clients = [threading.Thread(target=send_distinct_messages,
                                args=(gateway.port, n, 10, queue_ids, errors))
               for n in range(3)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(120)
    assert errors == []
    assert len(queue_ids) == 30
    gateway.stop()

    calls = parse_trace(trace_file.read_text(errors="replace"))
    report = check_durable_replies(calls, str(gateway.folder / "spoolgate.db"))
    syncs = sum(1 for c in calls if c.name in SYNCS and c.path.endswith("spoolgate.db-wal"))
    processes = len({c.pid for c in calls if QUEUED.search(c.data)})
    print(f"\n[{workers} worker(s)] 250 replies checked={len(report.checked)} "
          f"from {processes} process(es), WAL syncs={syncs}, "
          f"violations={len(report.violations)}")
    assert report.checked == set(queue_ids)
    assert processes == workers
    assert report.violations == []


# -- the checker itself: it must be able to fail ------------------------------------------

QID = "238HGKX9CF3NKT"
DATABASE = "/srv/spool/spoolgate.db"
WAL = DATABASE + "-wal"


def strace_string(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03o}"
                         for b in data) + '"'


def frame(page: int, commit: bool, content: bytes, offset: int) -> list[str]:
    header = page.to_bytes(4, "big") + (page if commit else 0).to_bytes(4, "big") + bytes(16)
    body = bytes(4000) + content
    return [f"100 10:00:00.{offset:06d} pwrite64(7<{WAL}>, {strace_string(header)}, 24, {offset}) = 24",
            f"100 10:00:00.{offset + 1:06d} pwrite64(7<{WAL}>, {strace_string(body)}, "
            f"{len(body)}, {offset + 24}) = {len(body)}"]


def synthetic(order: list[str], sync_path: str = WAL) -> str:
    reply = strace_string(f"250 2.0.0 Ok: queued as {QID}\r\n".encode())
    pieces = {
        "data": frame(2, False, QID.encode() + b"message row", 1000)
        + frame(3, True, QID.encode() + b"recipient row", 5000),
        "sync": [f"100 10:00:00.020000 fdatasync(7<{sync_path}>) = 0"],
        "reply": [f"99 10:00:00.030000 write(9<socket:[4242]>, {reply}, 40) = 40"],
    }
    return "\n".join(line for name in order for line in pieces[name]) + "\n"


def test_checker_accepts_write_fsync_reply() -> None:
    report = check_durable_replies(parse_trace(synthetic(["data", "sync", "reply"])), DATABASE)
    assert report == Report({QID}, [])


@pytest.mark.parametrize("order", [["data", "reply", "sync"], ["reply", "data", "sync"],
                                   ["data", "reply"]])
def test_checker_reports_a_reply_before_the_fsync(order: list[str]) -> None:
    report = check_durable_replies(parse_trace(synthetic(order)), DATABASE)
    assert report.checked == {QID}
    assert len(report.violations) == 1, report


def test_checker_reports_an_fsync_of_another_file() -> None:
    report = check_durable_replies(
        parse_trace(synthetic(["data", "sync", "reply"], sync_path=DATABASE)), DATABASE)
    assert len(report.violations) == 1 and "no fsync" in report.violations[0]


def test_checker_reports_an_fsync_before_the_commit_frame() -> None:
    lines = synthetic(["data", "sync", "reply"]).splitlines()
    # Move the fsync between the first frame and the commit frame.
    text = "\n".join(lines[:2] + [lines[4]] + lines[2:4] + lines[5:]) + "\n"
    report = check_durable_replies(parse_trace(text), DATABASE)
    assert len(report.violations) == 1 and "no fsync" in report.violations[0]


def test_checker_follows_unfinished_and_resumed_calls() -> None:
    lines = synthetic(["data"]).splitlines()
    reply = strace_string(f"250 2.0.0 Ok: queued as {QID}\r\n".encode())
    lines += [f"100 10:00:00.020000 fdatasync(7<{WAL}> <unfinished ...>",
              f"99 10:00:00.020100 write(9<socket:[4242]>, {reply}, 40) = 40",
              "100 10:00:00.020200 <... fdatasync resumed>) = 0"]
    report = check_durable_replies(parse_trace("\n".join(lines)), DATABASE)
    assert len(report.violations) == 1, "a 250 written while the fsync was running is early"
