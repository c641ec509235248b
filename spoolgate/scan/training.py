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


def train(classifier: BayesClassifier, spam_paths: Iterable[Path],
          ham_paths: Iterable[Path]) -> TrainingReport:
    """Learn every message under *spam_paths* as spam and under *ham_paths* as ham."""
    started = time.monotonic()
    seen = [0]
    learned_spam = classifier.learn_many(_counted(spam_paths, seen), spam=True)
    learned_ham = classifier.learn_many(_counted(ham_paths, seen), spam=False)
    return TrainingReport(learned_spam, learned_ham, seen[0] - learned_spam - learned_ham,
                          time.monotonic() - started)


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
