"""Who may use the console, and on which domains.

Owns the role check every console request makes on the server side: an ``admin`` sees and
acts on everything, a ``domain-admin`` on the messages with a recipient in their domains
(and only on those recipients), a ``user`` on nothing here (403). A message out of scope
is answered 404, exactly as one that does not exist, so its queue ID reveals nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.exceptions import HTTPException

from spoolgate.store.accounts import Accounts, WebSession
from spoolgate.store.console import Scope, scope_of


@dataclass(frozen=True, slots=True)
class Operator:
    """A signed-in console user: their address, role and the domains they may see."""

    email: str
    role: str
    scope: Scope
    client_ip: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, domain: str) -> bool:
        return self.scope is None or domain.lower() in self.scope


def operator(accounts: Accounts, session: WebSession) -> Operator:
    """The console user behind *session*; HTTP 403 for anyone without a console role."""
    user = accounts.get_user(session.email)
    if user is None or user.disabled or user.role not in ("admin", "domain-admin"):
        raise HTTPException(403, "The console is for administrators. Your mail is in "
                                 "the inbox.")
    return Operator(user.email, user.role, scope_of(user.role, user.domains),
                    session.client_ip)
