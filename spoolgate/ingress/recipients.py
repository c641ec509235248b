"""Recipient policy: mail is accepted only for configured domains (never an open relay).

Whatever the client's address, a recipient outside the configured domains gets
``550 5.7.1``. Local parts that ask a downstream server to route further
(``user%other@``, ``host!user@``, a quoted ``@``) are refused the same way, as
Postfix does with ``allow_untrusted_routing = no``. A domain with a recipient
list refuses unknown users with ``550 5.1.1``, except ``postmaster``, which
RFC 5321 §4.5.1 requires every domain to accept; a bare ``<postmaster>`` (no
domain) means the postmaster of the first configured domain.
"""

from __future__ import annotations

from spoolgate.ingress.addresses import Mailbox
from spoolgate.mail.reply import RELAY_DENIED, UNKNOWN_USER, Reply, SmtpError

_ROUTING_CHARACTERS = ("%", "!", "@")


class RecipientPolicy:
    """Decides RCPT TO for the configured domains."""

    def __init__(self, domains: dict[str, frozenset[str] | None]) -> None:
        self._domains = {name.lower(): users for name, users in domains.items()}

    @property
    def postmaster(self) -> str | None:
        """Where ``RCPT TO:<postmaster>`` goes: the first configured domain's postmaster."""
        return f"postmaster@{next(iter(self._domains))}" if self._domains else None

    def check(self, mailbox: Mailbox) -> None:
        """Return if *mailbox* may be accepted; raise :class:`SmtpError` otherwise."""
        if mailbox.is_literal or mailbox.domain not in self._domains:
            raise _error(RELAY_DENIED)
        if any(char in mailbox.local for char in _ROUTING_CHARACTERS):
            raise _error(RELAY_DENIED)
        users = self._domains[mailbox.domain]
        local = mailbox.local.lower()
        if users is not None and local not in users and local != "postmaster":
            raise _error(UNKNOWN_USER)


def _error(reply: Reply) -> SmtpError:
    return SmtpError(reply.code, reply.enhanced, reply.text)
