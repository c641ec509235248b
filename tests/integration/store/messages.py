"""Builds :class:`IncomingMessage` values for the store tests (also used by spawned children)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Recipient
from spoolgate.mail.queueid import new_queue_id

if TYPE_CHECKING:
    from spoolgate.store.store import Store


def incoming(recipients: Iterable[str | Recipient] = ("user@example.test",), *,
             queue_id: str | None = None, data: bytes = b"Subject: test\r\n\r\nbody\r\n",
             sender: str = "alice@src.test", received_at: float | None = None,
             node: str = "node-a", client: ClientInfo | None = None,
             events: tuple[tuple[str, str], ...] = (("accepted", "from=<alice@src.test>"),),
             **envelope_fields) -> IncomingMessage:
    """One message as intake would hand it to the store; keyword fields go to the Envelope."""
    received_at = time.time() if received_at is None else received_at
    rcpts = tuple(r if isinstance(r, Recipient) else Recipient(r) for r in recipients)
    envelope = Envelope(sender, rcpts, client or ClientInfo("192.0.2.7", "client.src.test"),
                        **envelope_fields)
    return IncomingMessage(queue_id or new_queue_id(received_at), envelope, data,
                           received_at, node, events)


def recipient_states(store: Store, queue_id: str) -> dict[str, str]:
    """The state of each recipient row of a stored message, by address."""
    return {r.address: r.state for r in store.show(queue_id).entry.recipients}
