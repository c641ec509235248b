"""Full-text search over a user's mail: the SQL of the webmail's search box.

Owns the queries over the search index that migration 4 builds on ``message_index``
(SQLite FTS5 ``message_search``; PostgreSQL's ``search`` tsvector with its GIN index) and
the value types a parsed query is made of (:class:`SearchQuery`; the parser lives in the
webmail). Results are only ever the user's own messages in their inbox and quarantine
(the recipient filter of the list), newest first, paged by the list's cursor; a message
not yet in ``message_index`` is not found, so callers index first (:meth:`unindexed`).
User text never reaches FTS5 or tsquery syntax: on SQLite every term becomes one quoted
FTS5 string (its quotes doubled), on PostgreSQL it goes through ``phraseto_tsquery``,
which reads plain text. Failures surface as SQLAlchemy errors from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa

from spoolgate.mail.states import RecipientState as S
from spoolgate.store import schema
from spoolgate.store.mailbox import (
    INBOX_STATES,
    Folder,
    MailboxItem,
    _dedupe,
    _in_folder,
    _item,
    _items,
    _mine,
)
from spoolgate.store.store import Store


class Field(StrEnum):
    """Where a term must occur; ANY is everywhere (subject, addresses, body, file names)."""

    ANY = "any"
    SUBJECT = "subject"
    FROM = "from"
    TO = "to"            # To and Cc
    FILENAME = "filename"


@dataclass(frozen=True, slots=True)
class SearchTerm:
    """Words that must occur in *field*, together and in this order."""

    field: Field
    text: str


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """Every term must match (AND); the flags and the time bounds narrow further."""

    terms: tuple[SearchTerm, ...] = ()
    has_attachment: bool = False
    after: float | None = None     # received at or after (seconds since the epoch)
    before: float | None = None    # received before

    @property
    def empty(self) -> bool:
        return not (self.terms or self.has_attachment or self.after or self.before)


_FTS_COLUMN = {Field.SUBJECT: "subject", Field.FROM: "from_text", Field.TO: "to_text",
               Field.FILENAME: "attachment_names"}
_PG_FIELD = {Field.SUBJECT: "{t}.subject", Field.FROM: "{t}.from_text",
             Field.TO: "{t}.to_text || ' ' || {t}.cc_text",
             Field.FILENAME: "{t}.attachment_names"}
_SEARCHED = (Folder.INBOX, Folder.QUARANTINE)
# Up to this many FTS5 hits, a SQLite search starts from them (about 10 µs each); above
# it, walking the mailbox newest first meets the first page's hits soon.
FEW_HITS = 2_000
_SQLITE_COUNT_HITS = sa.text(
    "SELECT count(*) FROM (SELECT rowid FROM message_search "
    "WHERE message_search MATCH :match LIMIT :few)")
_SQLITE_HIT_ROWS = sa.text(
    "SELECT r.id FROM message_search "
    "CROSS JOIN message_index x ON x.id = message_search.rowid "
    "CROSS JOIN recipients r INDEXED BY recipients_queue_id ON r.queue_id = x.queue_id "
    "LEFT JOIN mailbox_flags f ON f.queue_id = r.queue_id AND f.address = :email "
    "WHERE message_search MATCH :match AND lower(r.address) = :email "
    "AND r.state IN :states AND f.trashed_at IS NULL"  # the inbox and quarantine
).bindparams(sa.bindparam("states", expanding=True))


def fts5_match(terms: tuple[SearchTerm, ...]) -> str:
    """The FTS5 MATCH expression: each term one quoted string (so ``*``, ``NEAR(``, ``OR``,
    ``-``, ``^`` and ``:`` are only text), restricted to its column, all ANDed."""
    parts = []
    for term in terms:
        quoted = '"' + term.text.replace('"', '""') + '"'
        column = _FTS_COLUMN.get(term.field)
        parts.append(f"{column} : {quoted}" if column else quoted)
    return " AND ".join(parts)


class Search:
    """Search one user's mail in one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def find(self, email: str, query: SearchQuery, limit: int,
             before: tuple[float, str] | None = None) -> list[MailboxItem]:
        """Up to *limit* of the user's messages matching *query*, newest first, older than
        the *before* cursor; an empty query finds nothing."""
        if query.empty:
            return []
        r, x = schema.recipients, schema.message_index
        with self.store.reading() as conn:
            rows = self._few_hits(conn, email, query.terms) if query.terms else None
            if rows is not None:  # already the user's searched folders and words
                select = _items(email, mine=r.c.id.in_(rows)).where(*_filters(query))
            else:
                select = _items(email).where(
                    sa.or_(*(_in_folder(f) for f in _SEARCHED)), x.c.id.is_not(None),
                    *_filters(query), *self._matches(query.terms))
            if before is not None:
                at, queue_id = before
                select = select.where(sa.or_(r.c.queued_at < at, sa.and_(
                    r.c.queued_at == at, r.c.queue_id < queue_id)))
            select = select.order_by(r.c.queued_at.desc(), r.c.queue_id.desc()).limit(limit)
            return _dedupe([_item(row) for row in conn.execute(select)])

    def unindexed(self, email: str, limit: int, since: float | None = None) -> list[str]:
        """Queue IDs of up to *limit* of the user's messages (any folder, so a restore
        leaves no gap) not yet indexed, newest first; only those queued after *since*."""
        r, x = schema.recipients, schema.message_index
        select = (sa.select(r.c.queue_id)
                  .select_from(r.outerjoin(x, x.c.queue_id == r.c.queue_id))
                  .where(_mine(email), x.c.id.is_(None))
                  .order_by(r.c.queued_at.desc(), r.c.queue_id.desc()).limit(limit))
        if since is not None:
            select = select.where(r.c.queued_at > since)
        with self.store.reading() as conn:
            found = list(conn.execute(select).scalars())
        return list(dict.fromkeys(found))

    def _few_hits(self, conn: sa.Connection, email: str,
                  terms: tuple[SearchTerm, ...]) -> list[int] | None:
        """On SQLite, when the words occur in at most FEW_HITS messages (of anyone), the
        IDs of the user's recipient rows among them, else None (then walk the mailbox).
        SQLite keeps no statistics, so it takes ``lower(address) = ?`` for a few rows and
        would walk a 100,000-message mailbox for each hit: the CROSS JOINs and the named
        index make it start from the hits and look each one's rows up."""
        if self.store.backend != "sqlite":
            return None
        match = fts5_match(terms)
        hits = conn.execute(_SQLITE_COUNT_HITS, {"match": match, "few": FEW_HITS + 1})
        if hits.scalar_one() > FEW_HITS:
            return None
        return list(conn.execute(_SQLITE_HIT_ROWS, {
            "match": match, "email": email.lower(),
            "states": [*INBOX_STATES, S.QUARANTINED.value]}).scalars())

    def _matches(self, terms: tuple[SearchTerm, ...]) -> list[sa.ColumnElement[bool]]:
        if not terms:
            return []
        if self.store.backend == "postgresql":
            # The hits first, from the GIN index, materialised: left to itself the planner
            # underestimates the user's rows (``trashed_at IS NULL`` across the outer join
            # to the flags) and checks every message's document one by one (0.5 s for
            # 30,000 messages, against 0.2–50 ms this way).
            h = schema.message_index.alias("hit")
            hits = (sa.select(h.c.queue_id).where(*(_pg_term(term, "hit") for term in terms))
                    .cte("hits").prefix_with("MATERIALIZED"))
            return [schema.recipients.c.queue_id.in_(sa.select(hits.c.queue_id))]
        return [_fts5_condition(terms)]


def _filters(query: SearchQuery) -> list[sa.ColumnElement[bool]]:
    """The query's conditions besides its words."""
    r, x = schema.recipients, schema.message_index
    conditions: list[sa.ColumnElement[bool]] = []
    if query.has_attachment:
        conditions.append(x.c.has_attachments == sa.true())
    if query.after is not None:
        conditions.append(r.c.queued_at >= query.after)
    if query.before is not None:
        conditions.append(r.c.queued_at < query.before)
    return conditions


def _fts5_condition(terms: tuple[SearchTerm, ...]) -> sa.ColumnElement[bool]:
    fts = sa.table("message_search", sa.column("rowid"), sa.column("message_search"))
    hits = sa.select(fts.c.rowid).where(fts.c.message_search.op("MATCH")(fts5_match(terms)))
    return schema.message_index.c.id.in_(hits)


def _pg_term(term: SearchTerm, table: str = "message_index") -> sa.ColumnElement[bool]:
    """The GIN-indexed document must hold the phrase; a field term also checks its field."""
    config = sa.literal_column("'simple'::regconfig")
    source, target = schema.PG_SPLIT
    phrase = sa.func.phraseto_tsquery(config, sa.func.translate(term.text, source, target))
    document = sa.literal_column(f"{table}.search").op("@@")(phrase)
    if term.field is Field.ANY:
        return document
    field = sa.func.translate(sa.literal_column(_PG_FIELD[term.field].format(t=table)),
                              source, target)
    return sa.and_(document, sa.func.to_tsvector(config, field).op("@@")(phrase))
