"""The webmail's settings: one frozen value built by the composition root from the config.

Owns nothing but the defaults; it never reads a file or the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from spoolgate.config import ImapSettings


@dataclass(frozen=True, slots=True)
class WebmailSettings:
    """What the webmail needs to know; times are seconds."""

    hostname: str
    # domain -> route name as in the routes table ("smtp://host:port"), for the banner
    domains: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    node: str = "web"
    session_idle: float = 30 * 60
    session_max: float = 12 * 3600
    totp_pending: float = 5 * 60          # to type the TOTP code after the password
    secure_cookies: bool = False          # also Secure whenever the request came over TLS
    timezone: str = "UTC"                 # times shown to users
    page_size: int = 50
    # Sign-in throttling: no delay for the first failures, then a delay doubling from
    # throttle_delay up to throttle_max_delay; locked for lockout_seconds after N failures.
    throttle_free_failures: int = 3
    throttle_delay: float = 2.0
    throttle_max_delay: float = 60.0
    account_lock_after: int = 10
    ip_lock_after: int = 50
    lockout_seconds: float = 15 * 60
    throttle_forget_after: float = 3600.0
    # IMAP verification: domain -> the company's IMAP server, which decides while it answers;
    # domain -> local parts that may get an account on first sign-in (None: any).
    imap: Mapping[str, ImapSettings] = field(default_factory=lambda: MappingProxyType({}))
    imap_local_parts: Mapping[str, frozenset[str] | None] = field(
        default_factory=lambda: MappingProxyType({}))
    imap_timeout: float = 5.0
    trash_retention: float = 0.0          # after emptying the trash, until the purge may run
    max_inline_text: int = 2 * 1024 * 1024  # characters of a text part shown; the rest is cut
    # Sending (compose, reply, forward): limits checked before anything is queued.
    max_recipients: int = 100             # To + Cc + Bcc, after removing duplicates
    # A stolen password must not make the gateway a spam cannon: recipients per user and
    # hour, over every message sent from the webmail.
    max_recipients_per_hour: int = 300
    max_attachments: int = 20
    max_attachment_size: int = 10 * 1024 * 1024   # bytes of one uploaded file
    max_message_size: int = 25 * 1024 * 1024      # bytes of the message as sent (encoded)
