"""spoolgate/scan/training.py: messages from files, folders, Maildirs and mbox files, training
runs, and a classifier trained on half of the labelled corpus judging the other half."""

from __future__ import annotations

import csv
import mailbox
import random
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from spoolgate.mime.parse import parse_message
from spoolgate.scan import ngrams
from spoolgate.scan.bayes import BayesClassifier
from spoolgate.scan.training import (
    count_messages,
    interleave,
    iter_messages,
    strip_from_line,
    train,
)
from spoolgate.store.bayes import BayesStore
from spoolgate.store.store import open_store

FROM_LINE = b"From sender@remote.test  Thu Aug 22 13:17:22 2002\n"


def message(n: int, body: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"sender{n}@remote.test"
    msg["Subject"] = f"message {n}"
    msg["Message-ID"] = f"<{n}@remote.test>"
    msg.set_content(body or f"Body of message number {n}.\n")
    return msg.as_bytes()


def subjects(path: Path) -> list[str]:
    return [parse_message(raw).subject for _, raw in iter_messages(path)]


def test_a_single_file_loses_its_leading_from_line(tmp_path: Path) -> None:
    path = tmp_path / "00001.txt"
    path.write_bytes(FROM_LINE + message(1, "From the desk of the editor.\n"))

    [(name, raw)] = list(iter_messages(path))

    assert name == str(path)
    assert raw == message(1, "From the desk of the editor.\n")


def test_strip_from_line_leaves_other_messages_alone() -> None:
    assert strip_from_line(message(1)) == message(1)
    assert strip_from_line(FROM_LINE + message(1)) == message(1)


def test_a_folder_is_read_in_name_order_recursively_without_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "b.eml").write_bytes(message(2))
    (tmp_path / "a.eml").write_bytes(FROM_LINE + message(1))
    (tmp_path / ".hidden").write_bytes(message(9))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.eml").write_bytes(message(3))

    assert subjects(tmp_path) == ["message 1", "message 2", "message 3"]


def test_a_maildir_yields_new_and_cur_messages(tmp_path: Path) -> None:
    box = mailbox.Maildir(tmp_path / "Junk", create=True)
    for n in (1, 2):
        box.add(mailbox.MaildirMessage(message(n)))  # new/
    seen = mailbox.MaildirMessage(message(3))
    seen.set_subdir("cur")
    seen.add_flag("S")
    box.add(seen)
    box.close()

    assert sorted(subjects(tmp_path / "Junk")) == ["message 1", "message 2", "message 3"]
    assert {Path(name).parent for name, _ in iter_messages(tmp_path / "Junk")} \
        == {tmp_path / "Junk"}


def test_an_mbox_yields_each_message(tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "spam.mbox", create=True)
    for n in (1, 2, 3):
        box.add(mailbox.mboxMessage(message(n, f"Line one of {n}\n\nFrom here on, text.\n")))
    box.close()

    found = list(iter_messages(tmp_path / "spam.mbox"))

    assert [parse_message(raw).subject for _, raw in found] == [
        "message 1", "message 2", "message 3"]
    assert [name for name, _ in found] == [f"{tmp_path / 'spam.mbox'}#{n}" for n in (1, 2, 3)]
    assert all(not raw.startswith(b"From ") for _, raw in found)


def test_count_messages_counts_what_iter_messages_yields(tmp_path: Path) -> None:
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    for name in ("a.eml", "sub/b.eml", ".hidden"):
        (tmp_path / "folder" / name).write_bytes(message(1))
    box = mailbox.Maildir(tmp_path / "folder" / "Junk", create=True)
    box.add(mailbox.MaildirMessage(message(2)))
    box.close()
    mbox = mailbox.mbox(tmp_path / "folder" / "old.mbox", create=True)
    for n in range(3):
        mbox.add(mailbox.mboxMessage(message(n)))
    mbox.close()

    assert count_messages(tmp_path / "folder") == 6
    assert count_messages(tmp_path / "folder") == len(list(iter_messages(tmp_path / "folder")))


def test_interleave_keeps_each_kind_s_share_even_from_start_to_end() -> None:
    spam = [b"s%d" % n for n in range(3)]
    ham = [b"h%d" % n for n in range(9)]

    merged = list(interleave(spam, 3, ham, 9))

    labels = [is_spam for _, is_spam in merged]
    assert [raw for raw, is_spam in merged if is_spam] == spam
    assert [raw for raw, is_spam in merged if not is_spam] == ham
    for end in range(1, len(labels) + 1):  # every prefix holds a quarter spam, give or take one
        assert abs(sum(labels[:end]) - end / 4) <= 1, labels


def test_interleave_yields_everything_when_the_counts_were_wrong() -> None:
    merged = list(interleave(iter([b"s"] * 5), 1, iter([b"h"] * 2), 10))

    assert sorted(merged) == [(b"h", False)] * 2 + [(b"s", True)] * 5
    assert list(interleave([], 0, [b"h"], 0)) == [(b"h", False)]


@pytest.fixture
def classifier(sqlite_url: str) -> Iterator[BayesClassifier]:
    store = open_store(sqlite_url)
    bayes = BayesStore(store.engine)
    yield BayesClassifier(bayes)
    bayes.close()
    store.close()


def test_train_learns_spam_and_ham_and_counts_what_it_passed_over(
        tmp_path: Path, classifier: BayesClassifier) -> None:
    spam = tmp_path / "spam"
    spam.mkdir()
    for n in range(3):
        (spam / f"{n}.eml").write_bytes(message(n))
    (spam / "cmds").write_bytes(b"")  # not a message
    ham = mailbox.mbox(tmp_path / "ham.mbox", create=True)
    for n in range(10, 14):
        ham.add(mailbox.mboxMessage(message(n)))
    ham.close()

    report = train(classifier, [spam], [tmp_path / "ham.mbox"])

    assert (report.learned_spam, report.learned_ham, report.skipped) == (3, 4, 1)
    assert report.seconds >= 0
    assert classifier.store.totals() == (3, 4)
    again = train(classifier, [spam], [tmp_path / "ham.mbox"])
    assert (again.learned_spam, again.learned_ham, again.skipped) == (0, 0, 8)
    moved = train(classifier, [tmp_path / "ham.mbox"], [])
    assert (moved.learned_spam, moved.learned_ham, moved.skipped) == (4, 0, 0)
    assert classifier.store.totals() == (7, 0)


EVALUATED = 800  # messages of the held-out half judged (a sample keeps the test short)


def test_trained_on_half_the_corpus_it_judges_the_other_half(
        corpus: Path, classifier: BayesClassifier) -> None:
    with (corpus / "labels.csv").open(newline="") as file:
        rows = [(corpus / row["path"], row["label"] == "spam") for row in csv.DictReader(file)]
    random.Random(20261129).shuffle(rows)
    half = len(rows) // 2
    trained, held_out = rows[:half], rows[half:][:EVALUATED]

    report = train(classifier, [path for path, spam in trained if spam],
                   [path for path, spam in trained if not spam])

    assert report.learned_spam + report.learned_ham > 0.95 * half
    verdicts = [(spam, _probability(classifier, path) > 0.5) for path, spam in held_out]
    true_pos = sum(spam and said for spam, said in verdicts)
    false_pos = sum(not spam and said for spam, said in verdicts)
    false_neg = sum(spam and not said for spam, said in verdicts)
    hams = sum(not spam for spam, _ in verdicts)
    f1 = 2 * true_pos / (2 * true_pos + false_pos + false_neg)
    assert f1 > 0.8, (true_pos, false_pos, false_neg)
    assert false_pos / hams < 0.02, (false_pos, hams)
    # the n-gram model on its own, learned in the same run (interleaved), judges as well
    ngram_verdicts = [(spam, _log_odds(classifier, path) > 0) for path, spam in held_out]
    true_pos = sum(spam and said for spam, said in ngram_verdicts)
    wrong = sum(spam != said for spam, said in ngram_verdicts)
    assert 2 * true_pos / (2 * true_pos + wrong) > 0.8, (true_pos, wrong)


def _log_odds(classifier: BayesClassifier, path: Path) -> float:
    found = ngrams.features(strip_from_line(path.read_bytes()))
    return classifier.store.weight_sum(found)


def _probability(classifier: BayesClassifier, path: Path) -> float:
    probability, _ = classifier.classify(parse_message(strip_from_line(path.read_bytes())))
    assert probability is not None
    return probability
