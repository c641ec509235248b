"""One SMTP session: aiosmtpd's protocol with the verbs a gateway MX needs done its own way.

aiosmtpd keeps the conversation loop, STARTTLS (it discards commands pipelined
behind STARTTLS, CVE-2024-34083) and the idle timer. This subclass replaces
EHLO (our extensions), MAIL and RCPT (strict paths, DSN parameters, relay
policy), DATA (chunked reading with the smuggling checks of
:mod:`spoolgate.ingress.data`, an idle timer that a slow honest upload keeps
alive) and adds what an MX needs: session limits, an error budget, NUL
refusal, enhanced status codes on every reply, and a generic ``451 4.3.0`` for
internal errors, which are logged, never sent to the client.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import AnyStr, Protocol

from aiosmtpd.smtp import SMTP, syntax

from spoolgate.ingress.addresses import parse_mailbox, split_path
from spoolgate.ingress.data import BARE_NEWLINE, read_data
from spoolgate.ingress.limits import ConnectionLimiter
from spoolgate.ingress.params import MailParams, parse_mail_params, parse_rcpt_params
from spoolgate.ingress.recipients import RecipientPolicy
from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.reply import (
    LOCAL_ERROR,
    MESSAGE_TOO_BIG,
    RELAY_DENIED,
    SERVICE_BUSY,
    TOO_MANY_RECIPIENTS,
    UNKNOWN_USER,
    Reply,
    SmtpError,
)
from spoolgate.ops.metrics import Metrics

log = logging.getLogger("spoolgate.smtp")

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
# Enhanced codes for aiosmtpd's own replies, which lack them (RFC 2034 asks for them on all).
_ENHANCED_FOR = {"250": "2.0.0", "221": "2.0.0", "252": "2.5.0", "451": "4.3.0", "421": "4.7.0",
                 "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
                 "530": "5.7.0", "554": "5.5.1", "555": "5.5.4"}
# Commands that may be repeated in one session at most this often (Postfix: junk commands).
_CALL_LIMITS = {"NOOP": 100, "RSET": 100, "VRFY": 20, "HELP": 20, "EHLO": 20, "HELO": 20,
                "STARTTLS": 2, "*": 1_000_000}


class Intake(Protocol):
    """What a session needs from the next stage: store a message, return its queue ID."""

    def accept(self, envelope: Envelope, data: bytes, esmtp: bool = True) -> Awaitable[str]: ...

    def refused(self, envelope: Envelope, stage: str, reason: str, reply: str,
                recipient: str = "", data: bytes = b"") -> None:
        """Note a refusal for message tracking; never waits."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    hostname: str
    max_message_size: int
    max_recipients: int
    max_command_line: int
    max_line_length: int
    idle_timeout: float
    max_errors: int
    tls_context: ssl.SSLContext | None


class _NoHooks:
    """aiosmtpd wants a handler object; every decision is made in the session itself."""


_NO_HOOKS = _NoHooks()
# The verbs we answer; AUTH is left out on purpose (no submission on the MX port).
_VERBS = ("HELO", "EHLO", "NOOP", "QUIT", "STARTTLS", "HELP", "VRFY", "MAIL", "RCPT", "RSET",
          "DATA", "EXPN")


def _guarded(verb: Callable[[SMTP, str | None], Awaitable[None]]):
    """Wrap a verb: refuse NUL and invalid UTF-8, turn SmtpError into its reply."""

    @functools.wraps(verb)
    async def guarded(self: SMTP, arg: str | None) -> None:
        if arg and "\x00" in arg:
            await self.push("500 5.5.2 Error: NUL character in command")
            return
        if arg and not _is_utf8(arg):
            await self.push("500 5.5.2 Error: invalid UTF-8 in command")
            return
        try:
            await verb(self, arg)
        except SmtpError as error:
            await self.push(str(error.reply))

    return guarded


class SmtpSession(SMTP):
    """The SMTP protocol for one client connection."""

    def __init__(self, settings: SessionSettings, policy: RecipientPolicy, intake: Intake,
                 limiter: ConnectionLimiter, loop: asyncio.AbstractEventLoop,
                 metrics: Metrics | None = None) -> None:
        # SMTP.__init__ introspects the class and the handler with inspect.getmembers() on
        # every connection, a fifth of the CPU of a short session. This sets the same
        # attributes (tests/unit/ingress/test_session.py compares them with aiosmtpd's).
        mail_line = settings.max_command_line + 512  # room for DSN parameters
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=loop, limit=mail_line + 2),
            client_connected_cb=self._cb_client_connected, loop=loop)
        self.__ident__ = "ESMTP Spoolgate"
        self.loop = loop
        self.event_handler = _NO_HOOKS
        self.data_size_limit = settings.max_message_size
        self.enable_SMTPUTF8 = True
        self._decode_data = False
        self.hostname = settings.hostname
        self.tls_context = settings.tls_context
        self.require_starttls = False
        self._timeout_duration = settings.idle_timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = None
        self._auth_required = False
        self._auth_methods = {}
        self._handle_hooks = {}
        self._ehlo_hook_ver = None
        self._smtp_methods = {verb: getattr(self, "smtp_" + verb) for verb in _VERBS}
        self._enforce_call_limit = True
        self._call_limit_base = _CALL_LIMITS
        self._call_limit_default = _CALL_LIMITS["*"]
        self.line_length_limit = mail_line + 2
        self.command_size_limit = settings.max_command_line
        self.command_size_limits = defaultdict(lambda: settings.max_command_line,
                                               MAIL=mail_line, RCPT=mail_line)
        self.settings = settings
        self._policy, self._intake, self._limiter = policy, intake, limiter
        self._metrics = metrics if metrics is not None else Metrics()
        self._errors = 0
        self._closing = False
        self._client_ip = "unknown"
        self._reset_transaction()

    # -- session plumbing -------------------------------------------------

    def _reset_transaction(self) -> None:
        self._sender: str | None = None
        self._mail_params = MailParams()
        self._recipients: list[Recipient] = []

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self._reset_transaction()

    async def _handle_client(self) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        self._client_ip = str(peer[0]) if peer else "unknown"
        self._metrics.smtp_sessions.inc()
        if not self._limiter.admit(self._client_ip):
            log.warning("reject: too many sessions client=[%s]", self._client_ip)
            self._closing = True
            await self.push(str(SERVICE_BUSY))
            self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            self._limiter.release(self._client_ip)

    async def push(self, status: AnyStr) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        code = text[:3]
        if (code in _ENHANCED_FOR and not _HAS_ENHANCED.match(text)
                and self.session is not None and self.session.extended_smtp):
            text = f"{text[:4]}{_ENHANCED_FOR[code]} {text[4:]}"
        if text[3:4] != "-":  # a multi-line reply counts once, at its last line
            self._metrics.reply(code)
        await super().push(text)
        if code[:1] in ("4", "5") and not self._closing:
            self._errors += 1
            if self._errors >= self.settings.max_errors and self.transport is not None:
                self._closing = True
                log.warning("disconnect: too many errors client=[%s]", self._client_ip)
                self._metrics.reply(421)
                await super().push("421 4.7.0 Too many errors, closing connection")
                self.transport.close()

    async def handle_exception(self, error: Exception) -> str:
        log.error("session error client=[%s]: %r", self._client_ip, error, exc_info=error)
        return str(LOCAL_ERROR)

    # -- verbs --------------------------------------------------------------

    @_guarded
    async def smtp_EHLO(self, hostname: str | None) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [self.hostname, f"SIZE {self.settings.max_message_size}", "PIPELINING",
                 "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"]
        if self.tls_context is not None and self._tls_protocol is None:
            lines.append("STARTTLS")
        # SMTP.push, not ours: EHLO lines carry keywords, not enhanced status codes.
        for line in lines[:-1]:
            await SMTP.push(self, f"250-{line}")
        self._metrics.reply(250)
        await SMTP.push(self, f"250 {lines[-1]}")

    @_guarded
    async def smtp_MAIL(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if self._sender is not None:
            raise SmtpError(503, "5.5.1", "Error: nested MAIL command")
        if not arg or arg[:5].upper() != "FROM:":
            raise SmtpError(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
        try:
            inside, param_text = split_path(arg[5:])
        except ValueError as error:
            raise SmtpError(501, "5.1.7", f"Bad sender address syntax: {error}") from None
        if param_text and not self.session.extended_smtp:
            raise SmtpError(501, "5.5.4", "Parameters need EHLO")
        params = parse_mail_params(param_text, self.settings.max_message_size)
        sender = ""
        if inside:
            try:
                sender = str(parse_mailbox(inside, params.smtputf8))
            except ValueError as error:
                raise SmtpError(501, "5.1.7", f"Bad sender address syntax: {error}") from None
        self._sender, self._mail_params = sender, params
        await self.push("250 2.1.0 Ok")

    @_guarded
    async def smtp_RCPT(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if self._sender is None:
            raise SmtpError(503, "5.5.1", "Error: need MAIL command")
        if not arg or arg[:3].upper() != "TO:":
            raise SmtpError(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
        if len(self._recipients) >= self.settings.max_recipients:
            raise SmtpError(TOO_MANY_RECIPIENTS.code, TOO_MANY_RECIPIENTS.enhanced,
                            TOO_MANY_RECIPIENTS.text)
        try:
            inside, param_text = split_path(arg[3:])
            if not inside:
                raise ValueError("empty recipient")
            if inside.lower() == "postmaster" and self._policy.postmaster:
                inside = self._policy.postmaster  # RFC 5321 4.5.1: no domain needed
            mailbox = parse_mailbox(inside, self._mail_params.smtputf8)
        except ValueError as error:
            raise SmtpError(501, "5.1.3", f"Bad recipient address syntax: {error}") from None
        if param_text and not self.session.extended_smtp:
            raise SmtpError(501, "5.5.4", "Parameters need EHLO")
        params = parse_rcpt_params(param_text)
        try:
            self._policy.check(mailbox)
        except SmtpError as error:
            log.info("reject: RCPT from=<%s> to=<%s> client=[%s]: %s", self._sender, mailbox,
                     self._client_ip, error.reply)
            reason = _RCPT_REASONS.get(error.reply, "other")
            self._metrics.rejected(reason)
            self._intake.refused(self._envelope(), "rcpt", reason, str(error.reply),
                                 str(mailbox))
            raise
        address = str(mailbox)
        if all(r.address != address for r in self._recipients):
            self._recipients.append(Recipient(address, params.notify, params.orcpt))
        await self.push("250 2.1.5 Ok")

    @_guarded
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        if arg:
            raise SmtpError(501, "5.5.4", "Syntax: DATA")
        if self._sender is None:
            raise SmtpError(503, "5.5.1", "Error: need MAIL command")
        if not self._recipients:
            raise SmtpError(554, "5.5.1", "Error: no valid recipients")
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        outcome = await read_data(self._reader, self.settings.max_message_size,
                                  self.settings.max_line_length, self._reset_timeout)
        if outcome is None:
            return
        if outcome.leftover:
            # Commands pipelined after the end of data go back to the command reader.
            self._reader._buffer[0:0] = outcome.leftover  # aiosmtpd itself edits _buffer
        envelope = self._envelope()
        self._set_post_data_state()
        if outcome.refusal is not None:
            log.info("reject: DATA from=<%s> client=[%s]: %s", envelope.sender, self._client_ip,
                     outcome.refusal)
            reason = _data_reason(outcome.refusal)
            self._metrics.rejected(reason)
            for recipient in envelope.recipients:
                self._intake.refused(envelope, "data", reason, str(outcome.refusal),
                                     recipient.address)
            await self.push(str(outcome.refusal))
            return
        queue_id = await self._intake.accept(envelope, outcome.data, self.session.extended_smtp)
        await self.push(f"250 2.0.0 Ok: queued as {queue_id}")

    @_guarded
    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        # aiosmtpd would start a second handshake inside the first and crash the session.
        if self._tls_protocol is not None:
            raise SmtpError(554, "5.5.1", "Error: TLS already active")
        await SMTP.smtp_STARTTLS(self, arg)

    smtp_HELO = _guarded(SMTP.smtp_HELO)
    smtp_NOOP = _guarded(SMTP.smtp_NOOP)
    smtp_QUIT = _guarded(SMTP.smtp_QUIT)
    smtp_HELP = _guarded(SMTP.smtp_HELP)
    smtp_VRFY = _guarded(SMTP.smtp_VRFY)
    smtp_RSET = _guarded(SMTP.smtp_RSET)
    smtp_EXPN = _guarded(SMTP.smtp_EXPN)

    def _envelope(self) -> Envelope:
        params = self._mail_params
        return Envelope(sender=self._sender or "", recipients=tuple(self._recipients),
                        client=ClientInfo(self._client_ip, self.session.host_name or "",
                                          self._tls_description()),
                        ret=params.ret, envid=params.envid, body_type=params.body,
                        smtputf8=params.smtputf8, declared_size=params.size)

    def _tls_description(self) -> str | None:
        if self._tls_protocol is None or self.transport is None:
            return None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        return f"{ssl_object.version()}:{ssl_object.cipher()[0]}"


_RCPT_REASONS = {RELAY_DENIED: "relay", UNKNOWN_USER: "unknown_user"}


def _data_reason(refusal: Reply) -> str:
    """The metrics reason of a refusal by the DATA reader: size, or a framing attack."""
    if (refusal.code, refusal.enhanced) == (MESSAGE_TOO_BIG.code, MESSAGE_TOO_BIG.enhanced):
        return "size"
    return "smuggling" if refusal == BARE_NEWLINE else "other"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
