"""Queue IDs: their shape, their uniqueness, and that they sort by arrival time."""

from __future__ import annotations

import random

import pytest

from spoolgate.mail.queueid import is_queue_id, new_queue_id

ALPHABET = set("0123456789BCDFGHJKLMNPQRSTVWXYZ")


def test_shape() -> None:
    for _ in range(1000):
        queue_id = new_queue_id()
        assert len(queue_id) == 14
        assert set(queue_id) <= ALPHABET
        assert is_queue_id(queue_id)
    # Digits and consonants: no words, no I or O to misread as 1 or 0.
    assert not ALPHABET & set("AEIOU")


@pytest.mark.parametrize("text", ["", "0" * 13, "0" * 15, "0123456789bcdf", "0123456789BCDI",
                                  "0123456789BCDO", "0123456789BCD ", "0123456789BCD\n",
                                  "../../etc/pass"])
def test_is_queue_id_refuses_other_text(text: str) -> None:
    assert not is_queue_id(text)


def test_unique_over_100k_ids_issued_as_fast_as_possible() -> None:
    ids = [new_queue_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)


def test_ids_of_one_instant_differ() -> None:
    now = 1_700_000_000.0005
    ids = [new_queue_id(now) for _ in range(10)]
    assert len({queue_id[:9] for queue_id in ids}) == 1
    assert len(set(ids)) == len(ids)  # 5 random characters: 45 pairs, odds of 1 in 600,000


def test_sortable_by_time() -> None:
    rng = random.Random(5321)
    base = 1_700_000_000.0
    moments = sorted({base + rng.randrange(0, 10 ** 9) / 1000 for _ in range(2000)})
    ids = [new_queue_id(moment) for moment in moments]
    shuffled = ids[:]
    rng.shuffle(shuffled)
    assert sorted(shuffled) == ids


def test_millisecond_prefix() -> None:
    assert new_queue_id(1_700_000_000.0001)[:9] == new_queue_id(1_700_000_000.0009)[:9]
    assert new_queue_id(1_700_000_000.0009)[:9] < new_queue_id(1_700_000_000.0011)[:9]


def test_far_future_keeps_shape_and_order() -> None:
    now = new_queue_id()
    year_2300 = new_queue_id(10_413_792_000.0)
    assert is_queue_id(year_2300)
    assert now < year_2300
