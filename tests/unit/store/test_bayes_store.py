"""spoolgate/store/bayes.py on SQLite and PostgreSQL: counts, totals, relearning, batches,
concurrent learners, the n-gram model's weights, and the upgrade of version 2 and 10 stores."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, MutableMapping

import pytest
import sqlalchemy as sa

from spoolgate.scan import ngrams
from spoolgate.store import schema
from spoolgate.store.bayes import BayesStore, LearnItem
from spoolgate.store.engine import create_engine
from spoolgate.store.migrations import LATEST, MIGRATIONS
from spoolgate.store.store import Store, open_store


@pytest.fixture
def bayes(store: Store) -> Iterator[BayesStore]:
    opened = BayesStore(store.engine)
    yield opened
    opened.close()


def test_a_new_store_knows_nothing(bayes: BayesStore) -> None:
    assert bayes.totals() == (0, 0)
    assert bayes.counts(["free", "money"]) == {}
    assert bayes.label("f" * 64) is None


def test_learning_counts_each_token_once_per_message(bayes: BayesStore) -> None:
    assert bayes.learn("m1", {"free", "money"}, spam=True)
    assert bayes.learn("m2", {"free", "lunch"}, spam=True)
    assert bayes.learn("m3", {"lunch", "meeting"}, spam=False)

    assert bayes.totals() == (2, 1)
    assert bayes.counts(["free", "money", "lunch", "meeting", "unknown"]) == {
        "free": (2, 0), "money": (1, 0), "lunch": (1, 1), "meeting": (0, 1)}
    assert [bayes.label(fp) for fp in ("m1", "m3")] == [True, False]


def test_learning_the_same_message_again_changes_nothing(bayes: BayesStore) -> None:
    assert bayes.learn("m1", {"free", "money"}, spam=True)

    assert not bayes.learn("m1", {"free", "money"}, spam=True)

    assert bayes.totals() == (1, 0)
    assert bayes.counts(["free", "money"]) == {"free": (1, 0), "money": (1, 0)}


def test_relearning_with_the_other_label_moves_the_counts(bayes: BayesStore) -> None:
    bayes.learn("m1", {"invoice", "attached"}, spam=True)
    bayes.learn("m2", {"invoice", "overdue"}, spam=True)

    assert bayes.learn("m1", {"invoice", "attached"}, spam=False)  # "not spam" in webmail

    assert bayes.totals() == (1, 1)
    assert bayes.counts(["invoice", "attached", "overdue"]) == {
        "invoice": (1, 1), "attached": (0, 1), "overdue": (1, 0)}
    assert bayes.label("m1") is False
    assert not bayes.learn("m1", {"invoice", "attached"}, spam=False)
    assert bayes.learn("m1", {"invoice", "attached"}, spam=True)
    assert bayes.counts(["invoice", "attached"]) == {"invoice": (2, 0), "attached": (1, 0)}


def test_counts_never_go_below_zero(bayes: BayesStore) -> None:
    """A message relearned with tokens it did not have at first (a changed tokenizer)."""
    bayes.learn("m1", {"old"}, spam=True)

    bayes.learn("m1", {"new"}, spam=False)

    assert bayes.counts(["old", "new"]) == {"old": (1, 0), "new": (0, 1)}
    assert bayes.totals() == (0, 1)


def test_learn_many_commits_batches_and_the_last_label_of_a_message_wins(
        bayes: BayesStore) -> None:
    bayes.learn("known-spam", {"alpha"}, spam=True)
    items = [
        LearnItem("a", {"alpha", "bravo"}, True),
        LearnItem("b", {"bravo"}, False),
        LearnItem("c", {"charlie"}, True),
        LearnItem("c", {"charlie"}, False),        # same batch as the first "c": ham wins
        LearnItem("known-spam", {"alpha"}, True),  # already known: no change
        LearnItem("known-spam", {"alpha"}, False),  # same batch: moved to ham
        LearnItem("a", {"alpha", "bravo"}, True),  # a later batch: already known
    ]

    assert bayes.learn_many(items, batch_size=2) == (1, 3)  # (spam, ham) that changed

    assert bayes.totals() == (1, 3)
    assert bayes.counts(["alpha", "bravo", "charlie"]) == {
        "alpha": (1, 1), "bravo": (1, 1), "charlie": (0, 1)}
    assert [bayes.label(fp) for fp in ("a", "b", "c", "known-spam")] == [True, False, False, False]


def test_counts_of_more_tokens_than_one_query_takes(bayes: BayesStore) -> None:
    tokens = [f"token{i:05d}" for i in range(2_500)]
    bayes.learn("m1", tokens, spam=False)

    found = bayes.counts([*tokens, "never-seen"])

    assert len(found) == 2_500
    assert set(found.values()) == {(0, 1)}


def _at_once(store: Store, count: int, learn: Callable[[BayesStore, int], None]) -> None:
    """Run learn(its own BayesStore, n) in *count* threads released together."""
    learners = [BayesStore(store.engine) for _ in range(count)]
    start = threading.Barrier(count)

    def run(learner: BayesStore, n: int) -> None:
        start.wait(10)
        learn(learner, n)

    threads = [threading.Thread(target=run, args=(learner, n))
               for n, learner in enumerate(learners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for learner in learners:
        learner.close()


def test_learners_racing_on_one_message_count_it_once(store: Store) -> None:
    """Eight threads, each with its own BayesStore, learn the same message at once."""
    results: list[bool] = []
    _at_once(store, 8, lambda learner, _: results.append(
        learner.learn("same", {"race", "token"}, spam=True)))

    assert sorted(results) == [False] * 7 + [True]
    assert BayesStore(store.engine).counts(["race", "token"]) == {"race": (1, 0), "token": (1, 0)}


def _schema_at(conn: sa.Connection, version: int) -> None:
    """What Spoolgate with schema *version* left behind (as its steps make tables today)."""
    schema.schema_meta.create(conn)
    conn.execute(schema.schema_meta.insert(), {"key": "version", "value": str(version)})
    for number, _, step in MIGRATIONS:
        if number <= version:
            step(conn)


def test_a_version_2_store_is_upgraded_with_its_data_kept(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            _schema_at(conn, 2)
            conn.execute(schema.routes.insert(), {"name": "outbound", "state": "up",
                                                  "since": 1.0, "updated_at": 1.0})
        assert not sa.inspect(engine).has_table("bayes_tokens")
    finally:
        engine.dispose()

    store = open_store(store_url)
    try:
        bayes = BayesStore(store.engine)
        assert bayes.learn("m1", {"upgraded"}, spam=True)
        assert bayes.counts(["upgraded"]) == {"upgraded": (1, 0)}
        with store.reading() as conn:
            version = conn.execute(sa.select(schema.schema_meta.c.value)).scalar()
            routes = conn.execute(sa.select(schema.routes.c.name)).scalars().all()
        assert (version, routes) == (str(LATEST), ["outbound"])
        bayes.close()
    finally:
        store.close()


# -- the n-gram model's weights -------------------------------------------------------


def test_learning_with_a_step_stores_the_weights_the_steps_make_in_order(
        bayes: BayesStore) -> None:
    items = [LearnItem("s1", {"pills"}, True, {1, 2, 3}),
             LearnItem("h1", {"minutes"}, False, {3, 4}),
             LearnItem("s2", {"pills"}, True, {2, 5}),
             LearnItem("h2", {"lunch"}, False, {4, 6})]
    expected: dict[int, float] = {}
    for item in items:
        ngrams.learn_step(expected, item.features, item.spam)

    assert bayes.learn_many(items, batch_size=3, step=ngrams.learn_step) == (2, 2)

    assert bayes.weights([1, 2, 3, 4, 5, 6, 7]) == pytest.approx(expected)
    assert bayes.weight_sum([2, 4, 7]) == pytest.approx(expected[2] + expected[4])
    assert bayes.weight_sum([7, 8]) == 0.0
    assert bayes.all_totals() == (2, 2, 4)


def test_weights_of_features_over_the_whole_unsigned_32_bit_range(bayes: BayesStore) -> None:
    features = [0, 1, 2**31, 2**32 - 1, *range(1_000, 3_000)]  # more than one IN list's worth
    bayes.learn("m1", {"t"}, spam=True, features=features, step=ngrams.learn_step)

    assert bayes.weights(features) == pytest.approx({f: ngrams.RATE / 2 for f in features})
    assert bayes.weight_sum(features) == pytest.approx(len(features) * ngrams.RATE / 2)


def test_a_message_learned_before_the_model_is_learned_into_it_once(bayes: BayesStore) -> None:
    assert bayes.learn("old", {"invoice"}, spam=True)  # Bayes only, as before the model
    assert bayes.all_totals() == (1, 0, 0)

    assert bayes.learn("old", {"invoice"}, spam=True, features={7}, step=ngrams.learn_step)
    assert not bayes.learn("old", {"invoice"}, spam=True, features={7}, step=ngrams.learn_step)

    assert bayes.all_totals() == (1, 0, 1)
    assert bayes.counts(["invoice"]) == {"invoice": (1, 0)}  # Bayes counted it once
    assert bayes.weights([7]) == pytest.approx({7: ngrams.RATE / 2})


def test_moving_a_message_steps_towards_its_new_label(bayes: BayesStore) -> None:
    bayes.learn("m1", {"t"}, spam=True, features={7}, step=ngrams.learn_step)
    weights = bayes.weights([7])

    assert bayes.learn("m1", {"t"}, spam=False, features={7}, step=ngrams.learn_step)

    ngrams.learn_step(weights, {7}, spam=False)
    assert bayes.weights([7]) == pytest.approx(weights)
    assert bayes.weights([7])[7] < ngrams.RATE / 2
    assert bayes.all_totals() == (0, 1, 1)  # still one message in the model


def test_learners_on_different_messages_both_count(store: Store) -> None:
    """Two nodes learning at once add their changes: neither overwrites the other's."""
    _at_once(store, 2, lambda learner, n: learner.learn(
        f"m{n}", {f"m{n}"}, spam=True, features={7}, step=ngrams.learn_step))

    weight = BayesStore(store.engine).weights([7])[7]
    one_after_the_other: dict[int, float] = {}
    for _ in range(2):
        ngrams.learn_step(one_after_the_other, {7}, spam=True)
    # read before the other's commit: RATE / 2 each; read after it: the sequential weight
    assert weight in (pytest.approx(ngrams.RATE), pytest.approx(one_after_the_other[7]))


def test_a_version_10_store_keeps_its_learned_messages_out_of_the_new_model(
        store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            _schema_at(conn, 10)
            # step 3 creates bayes_learned as it is today: take off what version 10 lacked
            conn.exec_driver_sql("ALTER TABLE bayes_learned DROP COLUMN ngrams")
            conn.execute(sa.insert(sa.table("bayes_learned", sa.column("fingerprint"),
                                            sa.column("spam"), sa.column("learned_at"))),
                         {"fingerprint": "old", "spam": True, "learned_at": 1.0})
    finally:
        engine.dispose()

    store = open_store(store_url)
    try:
        bayes = BayesStore(store.engine)
        assert bayes.all_totals() == (0, 0, 0)
        assert bayes.learn("old", {"t"}, spam=True, features={7}, step=ngrams.learn_step)
        assert bayes.all_totals() == (0, 0, 1)
        assert bayes.weights([7]) == pytest.approx({7: ngrams.RATE / 2})
        bayes.close()
    finally:
        store.close()


def test_each_step_is_weighted_by_the_totals_once_its_batch_is_counted(
        bayes: BayesStore) -> None:
    asked: list[tuple[bool, int, int]] = []
    taken: list[tuple[bool, float]] = []

    def weigh(spam: bool, learned_spam: int, learned_ham: int) -> float:
        asked.append((spam, learned_spam, learned_ham))
        return (2.0 if spam else 0.5) * (learned_spam + learned_ham)

    def step(weights: MutableMapping[int, float], found: Collection[int], spam: bool,
             importance: float) -> None:
        taken.append((spam, importance))
        ngrams.learn_step(weights, found, spam, importance)

    items = [LearnItem("s1", {"pills"}, True, {1}), LearnItem("h1", {"minutes"}, False, {2}),
             LearnItem("s2", {"pills"}, True, {3}), LearnItem("h2", {"lunch"}, False, {4}),
             LearnItem("h3", {"agenda"}, False, {5})]

    assert bayes.learn_many(items, batch_size=3, step=step, weigh=weigh) == (2, 3)

    # first batch: 2 spam and 1 ham counted; second: 2 and 3
    assert sorted(asked) == [(False, 2, 1), (False, 2, 3), (True, 2, 1), (True, 2, 3)]
    assert taken == [(True, 6.0), (False, 1.5), (True, 6.0), (False, 2.5), (False, 2.5)]
    assert bayes.weights([1, 2, 4]) == pytest.approx(
        {1: 6.0 * ngrams.RATE / 2, 2: -1.5 * ngrams.RATE / 2, 4: -2.5 * ngrams.RATE / 2})


def test_ngrams_class_weight_balances_a_store_of_mostly_ham(bayes: BayesStore) -> None:
    items = [LearnItem(f"h{n}", {f"h{n}"}, False, {n}) for n in range(200)]
    items.append(LearnItem("s1", {"s1"}, True, {1_000}))
    bayes.learn_many(items, step=ngrams.learn_step, weigh=ngrams.class_weight)

    spam_step = bayes.weights([1_000])[1_000]
    ham_step = -bayes.weights([0])[0]
    assert spam_step / ham_step == pytest.approx(
        ngrams.class_weight(True, 1, 200) / ngrams.class_weight(False, 1, 200))
    assert spam_step > ham_step
