"""The built-in classifiers' statistics: Bayes token counts, n-gram weights, totals,
learned messages.

Owns the ``bayes_tokens``, ``bayes_totals``, ``bayes_learned`` and ``ngram_weights``
tables, so every node sharing a store classifies with the same statistics. A message is
known by its fingerprint: learning it again with the same label changes nothing,
learning it with the other label moves its counts (like ``sa-learn`` and Rspamd), which
webmail's "spam" and "not spam" buttons need. Counts never go below zero.

The n-gram model (:mod:`spoolgate.scan.ngrams`) learns by gradient steps, which the
caller passes as a function: a batch reads the weights of its messages' features, takes
the steps in order in memory, each weighted for its class by the caller's function of
the totals learned so far, and adds the changes to the stored weights (an addition,
so two nodes learning at once both count). Its steps cannot be undone exactly, so a
message moved to the other label takes a step towards it. A message learned before the
model existed is learned into it when it is learned again with the same label.

Each call learns in one transaction (``learn_many``: one per batch), so a crash keeps a
whole batch or none of it. On PostgreSQL several nodes may learn at once: a message is
claimed by inserting its fingerprint (a second claimant waits for the first one's
commit), known fingerprints are locked ``FOR UPDATE``, and token rows are written in
sorted order so that two learners lock rows in the same order. Database failures
surface as :class:`~spoolgate.store.store.StoreError`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from spoolgate.store import schema
from spoolgate.store.engine import WriteLock, write_lock_for
from spoolgate.store.store import Store

BATCH_SIZE = 500
"""Messages per transaction in :meth:`BayesStore.learn_many`."""
_IN_CHUNK = 900  # values per IN list, under every SQLite build's variable limit
_ROW_CHUNK = 5_000  # rows per executemany
NGRAMS = "ngrams"  # the bayes_totals row counting the messages the n-gram model learned

NgramStep = Callable[[MutableMapping[int, float], Collection[int], bool, float], None]
"""One learning step of the n-gram model: (weights, a message's features, spam, the weight
of the message's class), in place."""
ClassWeight = Callable[[bool, int, int], float]
"""The weight of a step for (spam, spam learned, ham learned): balances the classes."""


def _unweighted(spam: bool, learned_spam: int, learned_ham: int) -> float:
    return 1.0


@dataclass(frozen=True, slots=True)
class LearnItem:
    """One message to learn: its fingerprint, its distinct tokens and its label, and its
    n-gram features (none: Bayes only)."""

    fingerprint: str
    tokens: Collection[str]
    spam: bool
    features: Collection[int] = ()


@dataclass(slots=True)
class _Delta:
    """Count changes of one batch: per token and in total, [spam, ham]."""

    tokens: dict[str, list[int]] = field(default_factory=dict)
    totals: list[int] = field(default_factory=lambda: [0, 0])

    def add(self, tokens: Iterable[str], spam: bool, step: int) -> None:
        column = 0 if spam else 1
        self.totals[column] += step
        for token in tokens:
            self.tokens.setdefault(token, [0, 0])[column] += step


class BayesStore:
    """Token statistics of the built-in Bayes classifier in one store (SQLite or PostgreSQL).

    *write_lock* is the node's writer lock; without one, a lock on the same lock file
    as the store's is opened, so writers on SQLite still take turns.
    """

    def __init__(self, engine: sa.Engine, write_lock: WriteLock | None = None) -> None:
        self._own_lock = write_lock is None
        self._lock = write_lock or write_lock_for(engine.url.render_as_string(hide_password=False))
        self._store = Store(engine, self._lock)

    def close(self) -> None:
        """Release the lock file opened here (the engine belongs to the caller)."""
        if self._own_lock:
            self._lock.close()

    def learn(self, fingerprint: str, tokens: Collection[str], spam: bool,
              features: Collection[int] = (), step: NgramStep | None = None,
              weigh: ClassWeight = _unweighted) -> bool:
        """Learn one message; False when it was already learned with this label."""
        return sum(self.learn_many([LearnItem(fingerprint, tokens, spam, features)],
                                   step=step, weigh=weigh)) == 1

    def learn_many(self, items: Iterable[LearnItem], batch_size: int = BATCH_SIZE,
                   step: NgramStep | None = None,
                   weigh: ClassWeight = _unweighted) -> tuple[int, int]:
        """Learn *items*, committing every *batch_size*; return how many spam and how many
        ham changed anything.

        With *step*, the n-gram model learns them too, in their order, each step weighted
        by *weigh* of the totals learned once its batch is counted.
        """
        spam = ham = 0
        for batch in _batched(items, batch_size):
            with self._store.writing() as conn:
                changed = _learn_batch(conn, batch, step, weigh)
            spam += sum(item.spam for item in changed)
            ham += sum(not item.spam for item in changed)
        return spam, ham

    def counts(self, tokens: Iterable[str]) -> dict[str, tuple[int, int]]:
        """(spam, ham) message counts of each of *tokens* ever learned; unknown ones are absent."""
        t = schema.bayes_tokens
        found: dict[str, tuple[int, int]] = {}
        with self._store.reading() as conn:
            query = sa.select(t.c.token, t.c.spam_count, t.c.ham_count).where(
                _one_of(conn, t.c.token, "tokens"))
            for chunk in _batched(tokens, _IN_CHUNK):
                for token, spam, ham in conn.execute(query, {"tokens": chunk}):
                    found[token] = (spam, ham)
        return found

    def weights(self, features: Collection[int]) -> dict[int, float]:
        """The n-gram model's weight of each of *features*; never-learned ones are absent."""
        with self._store.reading() as conn:
            return _read_weights(conn, features)

    def weight_sum(self, features: Collection[int]) -> float:
        """The sum of the n-gram model's weights of *features* (the message's log-odds),
        added up by the database: a message has about 1,500 features."""
        t = schema.ngram_weights
        with self._store.reading() as conn:
            where, values = _any_of(conn, t.c.feature, features)
            query = sa.select(sa.func.coalesce(sa.func.sum(t.c.weight), 0.0)).where(where)
            return float(conn.execute(query, {"values": values}).scalar_one())

    def totals(self) -> tuple[int, int]:
        """How many spam and ham messages are learned."""
        spam, ham, _ = self.all_totals()
        return spam, ham

    def all_totals(self) -> tuple[int, int, int]:
        """How many spam and ham messages are learned, and how many the n-gram model learned."""
        t = schema.bayes_totals
        with self._store.reading() as conn:
            rows = dict(conn.execute(sa.select(t.c.label, t.c.messages)).all())
        return int(rows.get("spam", 0)), int(rows.get("ham", 0)), int(rows.get(NGRAMS, 0))

    def label(self, fingerprint: str) -> bool | None:
        """True if the message was learned as spam, False as ham, None if never."""
        t = schema.bayes_learned
        with self._store.reading() as conn:
            return conn.execute(sa.select(t.c.spam).where(t.c.fingerprint == fingerprint)).scalar()


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _learn_batch(conn: sa.Connection, batch: Sequence[LearnItem],
                 step: NgramStep | None, weigh: ClassWeight) -> list[LearnItem]:
    """Learn one batch; return the items that changed anything."""
    latest = {item.fingerprint: item for item in batch}  # a message's last label wins
    now = time.time()
    new = _claim_new(conn, list(latest.values()), now, ngrams=step is not None)
    known = _lock_known(conn, sorted(set(latest) - new))
    moved = [latest[fp] for fp, (was_spam, _) in known.items() if was_spam != latest[fp].spam]
    _relabel(conn, moved, now)
    delta = _Delta()
    for fp in new:
        delta.add(latest[fp].tokens, latest[fp].spam, +1)
    for item in moved:
        delta.add(item.tokens, item.spam, +1)
        delta.add(item.tokens, not item.spam, -1)
    _apply_tokens(conn, delta.tokens)
    _apply_totals(conn, delta.totals)
    changed = new | {item.fingerprint for item in moved}
    if step is not None:
        unmodelled = {fp for fp, (_, ngrams) in known.items() if not ngrams}
        _mark_modelled(conn, sorted(unmodelled))
        changed |= unmodelled
        _learn_ngrams(conn, [item for fp, item in latest.items() if fp in changed], step,
                      _weights_of_classes(conn, weigh))
        _apply_total(conn, NGRAMS, len(new) + len(unmodelled))
    return [item for fp, item in latest.items() if fp in changed]


def _one_of(conn: sa.Connection, column: sa.Column, name: str) -> sa.ColumnElement[bool]:
    """*column* is one of the list bound as *name*: ``= ANY(array)`` on PostgreSQL (one
    parameter, a quarter of the time of a 400-value IN list), ``IN (...)`` on SQLite."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(sa.bindparam(name, expanding=True))


def _insert(conn: sa.Connection, table: sa.Table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _claim_new(conn: sa.Connection, items: list[LearnItem], now: float,
               ngrams: bool) -> set[str]:
    """Insert the fingerprints not learned yet; return those (the messages now ours to count)."""
    t = schema.bayes_learned
    statement = (_insert(conn, t).on_conflict_do_nothing(index_elements=[t.c.fingerprint])
                 .returning(t.c.fingerprint))
    rows = [{"fingerprint": item.fingerprint, "spam": item.spam, "learned_at": now,
             "ngrams": ngrams}
            for item in sorted(items, key=lambda item: item.fingerprint)]
    return set(conn.execute(statement, rows).scalars()) if rows else set()


def _lock_known(conn: sa.Connection, fingerprints: list[str]) -> dict[str, tuple[bool, bool]]:
    """(stored label, learned by the n-gram model) of each learned fingerprint, locked
    until commit on PostgreSQL."""
    t = schema.bayes_learned
    query = (sa.select(t.c.fingerprint, t.c.spam, t.c.ngrams)
             .where(_one_of(conn, t.c.fingerprint, "fps"))
             .order_by(t.c.fingerprint).with_for_update())
    known: dict[str, tuple[bool, bool]] = {}
    for chunk in _batched(fingerprints, _IN_CHUNK):
        known.update((fp, (spam, ngrams)) for fp, spam, ngrams
                     in conn.execute(query, {"fps": chunk}))
    return known


def _mark_modelled(conn: sa.Connection, fingerprints: list[str]) -> None:
    if fingerprints:
        t = schema.bayes_learned
        conn.execute(t.update().where(t.c.fingerprint == sa.bindparam("fp")).values(ngrams=True),
                     [{"fp": fp} for fp in fingerprints])


def _any_of(conn: sa.Connection, column: sa.Column,
            values: Collection[int]) -> tuple[sa.ColumnElement[bool], object]:
    """(*column* is one of the integers *values*, what to bind as ``values``) in one
    parameter, for the ~1,500 features of a message: an array on PostgreSQL, a JSON array
    read by ``json_each`` on SQLite (less than half the time of 900-value IN lists, whose
    SQL text SQLite compiles again for every length). Integers only: JSON text cannot
    carry every string a token may hold (a NUL ends it)."""
    if conn.dialect.name == "postgresql":
        return _one_of(conn, column, "values"), list(values)
    each = sa.func.json_each(sa.bindparam("values", type_=sa.Text)).table_valued("value")
    return column.in_(sa.select(each.c.value)), json.dumps(list(values))


def _read_weights(conn: sa.Connection, features: Collection[int]) -> dict[int, float]:
    t = schema.ngram_weights
    where, values = _any_of(conn, t.c.feature, features)
    query = sa.select(t.c.feature, t.c.weight).where(where)
    return {feature: weight for feature, weight in conn.execute(query, {"values": values})}


def _weights_of_classes(conn: sa.Connection, weigh: ClassWeight) -> dict[bool, float]:
    t = schema.bayes_totals
    rows = dict(conn.execute(sa.select(t.c.label, t.c.messages)).all())
    spam, ham = int(rows.get("spam", 0)), int(rows.get("ham", 0))
    return {label: weigh(label, spam, ham) for label in (True, False)}


def _learn_ngrams(conn: sa.Connection, items: list[LearnItem], step: NgramStep,
                  importance: dict[bool, float]) -> None:
    """Take *step* for each of *items* in order, weighted by *importance* of its class;
    add the weights' changes to the store."""
    if not items:
        return
    weights = _read_weights(conn, sorted(set().union(*(item.features for item in items))))
    before = dict(weights)
    for item in items:
        step(weights, item.features, item.spam, importance[item.spam])
    t = schema.ngram_weights
    insert = _insert(conn, t)
    statement = insert.on_conflict_do_update(
        index_elements=[t.c.feature], set_={"weight": t.c.weight + insert.excluded.weight})
    rows = [{"feature": feature, "weight": weights[feature] - before.get(feature, 0.0)}
            for feature in sorted(weights)]
    for chunk in _batched(rows, _ROW_CHUNK):
        conn.execute(statement, chunk)


def _relabel(conn: sa.Connection, moved: list[LearnItem], now: float) -> None:
    if not moved:
        return
    t = schema.bayes_learned
    statement = (t.update().where(t.c.fingerprint == sa.bindparam("fp"))
                 .values(spam=sa.bindparam("label"), learned_at=now))
    conn.execute(statement, [{"fp": item.fingerprint, "label": item.spam} for item in moved])


def _apply_tokens(conn: sa.Connection, deltas: dict[str, list[int]]) -> None:
    """Add the positive changes (upsert) and take off the negative ones (never below zero).

    A moved message adds to the new label what it takes off the old one, so no row empties.
    """
    added, removed = [], []
    for token in sorted(deltas):
        spam, ham = deltas[token]
        if spam > 0 or ham > 0:
            added.append({"token": token, "spam_count": max(spam, 0), "ham_count": max(ham, 0)})
        if spam < 0 or ham < 0:
            removed.append({"t": token, "ds": max(-spam, 0), "dh": max(-ham, 0)})
    _add_token_counts(conn, added)
    _remove_token_counts(conn, removed)


def _add_token_counts(conn: sa.Connection, rows: list[dict]) -> None:
    t = schema.bayes_tokens
    insert = _insert(conn, t)
    statement = insert.on_conflict_do_update(index_elements=[t.c.token], set_={
        "spam_count": t.c.spam_count + insert.excluded.spam_count,
        "ham_count": t.c.ham_count + insert.excluded.ham_count})
    for chunk in _batched(rows, _ROW_CHUNK):
        conn.execute(statement, chunk)


def _remove_token_counts(conn: sa.Connection, rows: list[dict]) -> None:
    if not rows:
        return
    t = schema.bayes_tokens
    conn.execute(t.update().where(t.c.token == sa.bindparam("t")).values(
        spam_count=_minus(t.c.spam_count, sa.bindparam("ds")),
        ham_count=_minus(t.c.ham_count, sa.bindparam("dh"))), rows)


def _minus(column: sa.ColumnElement, amount: sa.ColumnElement) -> sa.ColumnElement:
    return sa.case((column > amount, column - amount), else_=0)


def _apply_totals(conn: sa.Connection, totals: list[int]) -> None:
    for label, step in zip(("spam", "ham"), totals, strict=True):
        _apply_total(conn, label, step)


def _apply_total(conn: sa.Connection, label: str, step: int) -> None:
    t = schema.bayes_totals
    if step > 0:
        insert = _insert(conn, t).values(label=label, messages=step)
        conn.execute(insert.on_conflict_do_update(
            index_elements=[t.c.label], set_={"messages": t.c.messages + step}))
    elif step < 0:
        conn.execute(t.update().where(t.c.label == label)
                     .values(messages=_minus(t.c.messages, sa.literal(-step))))
