"""Training input for the Bayes classifier: message files, folders, Maildirs and mbox files.

Owns finding the messages under a path and feeding them, in batches, to
:class:`~spoolgate.scan.bayes.BayesClassifier`. A path is read as a Maildir when it has
``cur/`` and ``new/``, as an mbox when it holds more than one ``From `` separator line, as
a folder of message files (recursively, hidden entries skipped) when it is any other
folder, else as one message, whose leading mbox ``From `` line (as in the SpamAssassin
public corpus) is dropped. Unreadable paths raise :class:`OSError`; input that is not a
message is counted as skipped.
"""

from __future__ import annotations

import mailbox
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from spoolgate.scan.bayes import BayesClassifier

# A From_ separator: "From sender date" (the date ending in a year) at the start of the
# file or after a blank line (mbox(5)).
_FROM_LINE = re.compile(rb"(?:\A|\n\r?\n)From \S+ [^\n]*\d{4}[ \t]*\r?\n")
_MBOX_SNIFF = 1024 * 1024  # bytes read to decide whether a file is an mbox


@dataclass(frozen=True, slots=True)
class TrainingReport:
    learned_spam: int
    learned_ham: int
    skipped: int  # already learned with that label, or not a message
    seconds: float


def iter_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) of every message under *path*, in a stable order."""
    if path.is_dir():
        yield from _maildir(path) if _is_maildir(path) else _folder(path)
    elif _is_mbox(path):
        yield from _mbox(path)
    else:
        yield str(path), strip_from_line(path.read_bytes())


def strip_from_line(data: bytes) -> bytes:
    """*data* without a leading mbox ``From `` separator line."""
    return data.partition(b"\n")[2] if data.startswith(b"From ") else data


def count_messages(path: Path) -> int:
    """How many messages :func:`iter_messages` finds under *path* (without reading them)."""
    if path.is_dir():
        if _is_maildir(path):
            return len(mailbox.Maildir(path, factory=None, create=False).keys())
        return sum(count_messages(entry) for entry in path.iterdir()
                   if not entry.name.startswith("."))
    if _is_mbox(path):
        box = mailbox.mbox(path, factory=None, create=False)
        try:
            return len(box.keys())
        finally:
            box.close()
    return 1


def train(classifier: BayesClassifier, spam_paths: Iterable[Path],
          ham_paths: Iterable[Path]) -> TrainingReport:
    """Learn every message under *spam_paths* as spam and under *ham_paths* as ham.

    Spam and ham are learned interleaved, each kind's share even from start to end: the
    n-gram model learns online, and all spam then all ham would leave it leaning to ham.
    """
    started = time.monotonic()
    spam_paths, ham_paths = list(spam_paths), list(ham_paths)
    seen = [0]
    learned_spam, learned_ham = classifier.learn_many(interleave(
        _counted(spam_paths, seen), sum(map(count_messages, spam_paths)),
        _counted(ham_paths, seen), sum(map(count_messages, ham_paths))))
    return TrainingReport(learned_spam, learned_ham, seen[0] - learned_spam - learned_ham,
                          time.monotonic() - started)


def interleave(spam: Iterable[bytes], spam_total: int, ham: Iterable[bytes],
               ham_total: int) -> Iterator[tuple[bytes, bool]]:
    """(message, spam) pairs from both streams, each one's share of what was taken so far
    kept close to its share of the totals; the rest of one stream once the other ends."""
    streams = {True: iter(spam), False: iter(ham)}
    totals = {True: max(spam_total, 1), False: max(ham_total, 1)}
    taken = {True: 0, False: 0}
    while streams:
        if len(streams) == 1:
            label = next(iter(streams))
        else:
            label = (taken[True] + 1) / totals[True] <= (taken[False] + 1) / totals[False]
        raw = next(streams[label], None)
        if raw is None:
            del streams[label]
            continue
        taken[label] += 1
        yield raw, label


def _counted(paths: Iterable[Path], seen: list[int]) -> Iterator[bytes]:
    for path in paths:
        for _, raw in iter_messages(path):
            seen[0] += 1
            yield raw


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.iterkeys()):
        yield f"{path}/{key}", box.get_bytes(key)


def _folder(path: Path) -> Iterator[tuple[str, bytes]]:
    for entry in sorted(path.iterdir()):
        if not entry.name.startswith("."):
            yield from iter_messages(entry)


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as file:
        head = file.read(_MBOX_SNIFF)
    return head.startswith(b"From ") and len(_FROM_LINE.findall(head)) > 1


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        for index, key in enumerate(box.iterkeys()):
            yield f"{path}#{index + 1}", box.get_bytes(key)
    finally:
        box.close()
