"""Sender allow and block rules kept in the store: a domain's and a user's.

Owns ``sender_rules``. A rule names a scope (a domain, set by its admins in the console,
or a user's address, set in the webmail or by a digest link), a sender (an address or a
domain, matched as the config's ``allow_senders`` / ``block_senders`` are) and an action
(allow or block). One scope has at most one rule per sender: adding it again replaces its
action. The scan policy reads every rule at once (:meth:`SenderRules.snapshot`, cached by
the caller); the console and the webmail list and remove them per scope. Every write is
one transaction; failures surface as :class:`~spoolgate.store.store.StoreError`; a sender
that is not an address or a domain raises :class:`ValueError`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from spoolgate.store import schema
from spoolgate.store.store import Store

SCOPE_KINDS = ("domain", "user")
ACTIONS = ("allow", "block")


@dataclass(frozen=True, slots=True)
class SenderRule:
    id: int
    scope_kind: str    # domain | user
    scope: str         # a domain name or a user's address, lower-case
    sender: str        # an address or a domain, lower-case
    action: str        # allow | block
    created_by: str
    created_at: float


def _frozen() -> Mapping[str, frozenset[str]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules by scope, as the policy reads them: scope -> the senders it allows or blocks."""

    domain_allow: Mapping[str, frozenset[str]] = field(default_factory=_frozen)
    domain_block: Mapping[str, frozenset[str]] = field(default_factory=_frozen)
    user_allow: Mapping[str, frozenset[str]] = field(default_factory=_frozen)
    user_block: Mapping[str, frozenset[str]] = field(default_factory=_frozen)

    @classmethod
    def of(cls, rules: Iterable[SenderRule]) -> RuleSet:
        table: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(
            lambda: defaultdict(set))
        for rule in rules:
            table[(rule.scope_kind, rule.action)][rule.scope].add(rule.sender)

        def frozen(kind: str, action: str) -> Mapping[str, frozenset[str]]:
            return MappingProxyType({scope: frozenset(senders) for scope, senders
                                     in table.get((kind, action), {}).items()})
        return cls(frozen("domain", "allow"), frozen("domain", "block"),
                   frozen("user", "allow"), frozen("user", "block"))

    def __len__(self) -> int:
        return sum(len(s) for m in (self.domain_allow, self.domain_block, self.user_allow,
                                    self.user_block) for s in m.values())


def normalise_sender(text: str) -> str:
    """*text* as a rule's sender (``user@example.org`` or ``example.org``), lower-case;
    ValueError when it is neither (the null sender, a bare word, spaces)."""
    entry = text.strip().lower()
    local, at, domain = entry.rpartition("@")
    if (not domain or "." not in domain or any(c.isspace() or c in "<>,;\"" for c in entry)
            or (at and not local) or domain.startswith(".") or domain.endswith(".")):
        raise ValueError(f"not an address or a domain: {text!r}")
    return entry


class SenderRules:
    """The sender rules of one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, scope_kind: str, scope: str, sender: str, action: str, created_by: str,
            now: float) -> SenderRule:
        """Allow or block *sender* for *scope*; an existing rule for that sender in that
        scope takes the new action (and author)."""
        if scope_kind not in SCOPE_KINDS or action not in ACTIONS:
            raise ValueError(f"unknown rule {scope_kind!r} {action!r}")
        t = schema.sender_rules
        values = {"scope_kind": scope_kind, "scope": scope.strip().lower(),
                  "sender": normalise_sender(sender), "action": action,
                  "created_by": created_by, "created_at": now}
        insert = postgresql.insert if self.store.backend == "postgresql" else sqlite.insert
        statement = insert(t).values(**values).on_conflict_do_update(
            index_elements=[t.c.scope_kind, t.c.scope, t.c.sender],
            set_={"action": action, "created_by": created_by, "created_at": now})
        with self.store.writing() as conn:
            conn.execute(statement)
            row = conn.execute(sa.select(*t.c).where(
                t.c.scope_kind == values["scope_kind"], t.c.scope == values["scope"],
                t.c.sender == values["sender"])).one()
        return SenderRule(**row._mapping)

    def remove(self, rule_id: int, scope_kind: str | None = None,
               scopes: Collection[str] | None = None) -> SenderRule | None:
        """Remove the rule *rule_id*, only if it is of *scope_kind* and one of *scopes*
        (None: any); the rule removed, or None."""
        t = schema.sender_rules
        where = [t.c.id == rule_id]
        if scope_kind is not None:
            where.append(t.c.scope_kind == scope_kind)
        if scopes is not None:
            where.append(t.c.scope.in_(sorted(s.lower() for s in scopes)))
        with self.store.writing() as conn:
            row = conn.execute(sa.select(*t.c).where(*where)).first()
            if row is None:
                return None
            conn.execute(t.delete().where(t.c.id == rule_id))
        return SenderRule(**row._mapping)

    def list(self, scope_kind: str | None = None,
             scopes: Collection[str] | None = None) -> list[SenderRule]:
        """Rules of *scope_kind* in *scopes* (None: every kind, every scope), by scope and
        sender."""
        t = schema.sender_rules
        query = sa.select(*t.c).order_by(t.c.scope_kind, t.c.scope, t.c.sender)
        if scope_kind is not None:
            query = query.where(t.c.scope_kind == scope_kind)
        if scopes is not None:
            query = query.where(t.c.scope.in_(sorted(s.lower() for s in scopes)))
        with self.store.reading() as conn:
            return [SenderRule(**row._mapping) for row in conn.execute(query)]

    def for_recipients(self, addresses: Iterable[str]) -> RuleSet:
        """The rules that bear on a message to *addresses*: their domains' and their own."""
        users = {a.strip().lower() for a in addresses}
        domains = {a.rpartition("@")[2] for a in users}
        t = schema.sender_rules
        query = sa.select(*t.c).where(sa.or_(
            sa.and_(t.c.scope_kind == "domain", t.c.scope.in_(sorted(domains))),
            sa.and_(t.c.scope_kind == "user", t.c.scope.in_(sorted(users)))))
        with self.store.reading() as conn:
            return RuleSet.of(SenderRule(**row._mapping) for row in conn.execute(query))

    def snapshot(self) -> RuleSet:
        """Every rule, for the scan policy's cache."""
        return RuleSet.of(self.list())
