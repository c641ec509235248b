"""SMTP replies as values and as exceptions that carry them.

A stage that refuses something raises :class:`SmtpError` with the reply the
client should see; the protocol layer turns it into the wire reply and never
guesses a code. Errors are temporary unless built with a 5xx code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced status (RFC 3463) and text."""

    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}" if self.enhanced else f"{self.code} {self.text}"

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400


class SmtpError(Exception):
    """Refusal carrying the SMTP reply the client must get."""

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(f"{code} {enhanced} {text}")
        self.reply = Reply(code, enhanced, text)


# Replies used in more than one place, named for what they mean.
RELAY_DENIED = Reply(550, "5.7.1", "Relay access denied")
UNKNOWN_USER = Reply(550, "5.1.1", "Recipient address rejected: user unknown")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
STORAGE_FAILURE = Reply(452, "4.3.1", "Insufficient system storage, try again later")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops (mail loop?)")
SERVICE_BUSY = Reply(421, "4.7.0", "Too many connections, try again later")
