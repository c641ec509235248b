"""An SMTP and LMTP client for one connection to a downstream server.

Owns the wire: greeting, EHLO/LHLO, STARTTLS, one mail transaction at a time
with per-recipient replies (LMTP answers once per accepted recipient after the
data), PIPELINING (RFC 2920) when offered, and canonical data: CRLF line ends
only and dot-stuffing, so nothing we relay can smuggle a second message past
the company's server. Every read and write has a deadline.

Why not aiosmtplib: its protocol drops reply bytes that arrive while an earlier
reply waits to be picked up, so LMTP's replies after DATA (and pipelined
replies) can be lost; the few lines of a client on asyncio streams are easier
to make exact than to work around that.

Failures raise :class:`SessionFailed` carrying the reply that explains them
(a real server reply, or a local one such as ``451 4.4.1 connection refused``);
``session_level`` tells a dead connection from a refused transaction.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from spoolgate.mail.reply import Reply

MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
_LONE_LF = re.compile(rb"(?<!\r)\n")
_LONE_CR = re.compile(rb"\r(?!\n)")
_BREAKS = re.compile(r"[\r\n\0]")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 30.0
    greeting: float = 300.0
    command: float = 300.0
    data_end: float = 600.0


class SessionFailed(Exception):
    """The connection or the transaction failed; ``reply`` says why, in SMTP terms."""

    def __init__(self, reply: Reply, session_level: bool = True) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.session_level = session_level


@dataclass(frozen=True, slots=True)
class Transaction:
    """One message for one or more recipients of the same server."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    mail_params: tuple[str, ...] = ()
    rcpt_params: tuple[tuple[str, ...], ...] = ()  # per recipient, same order
    smtputf8: bool = False


def parse_reply(lines: Sequence[bytes]) -> Reply:
    """Turn the lines of one reply into a :class:`Reply` (text of all lines joined)."""
    code = int(lines[0][:3])
    texts = [line[4:].decode("utf-8", "replace").strip() for line in lines]
    enhanced = ""
    match = _ENHANCED.match(texts[0])
    if match and match.group(1) == str(code)[0]:
        enhanced = f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
        texts = [_ENHANCED.sub("", text, count=1) for text in texts]
    return Reply(code, enhanced, " ".join(t for t in texts if t))


def canonical_data(data: bytes) -> bytes:
    """Message bytes as they go on the wire after DATA: CRLF only, dot-stuffed, ended."""
    crlf = data.count(b"\r\n")  # counting is a fast C loop; the regexes are not
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:  # never for stored mail
        data = _LONE_CR.sub(b"\r\n", _LONE_LF.sub(b"\r\n", data))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def xtext(value: str) -> str:
    """RFC 3461 xtext encoding (for ORCPT and ENVID passed on)."""
    out = []
    for byte in value.encode("utf-8"):
        out.append(chr(byte) if 33 <= byte <= 126 and byte not in (43, 61) else f"+{byte:02X}")
    return "".join(out)


class MailClient:
    """One open connection; use :meth:`open`, then :meth:`send` for each message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 lmtp: bool, timeouts: Timeouts, remote: str) -> None:
        self._reader, self._writer = reader, writer
        self.lmtp = lmtp
        self.timeouts = timeouts
        self.remote = remote
        self.extensions: dict[str, str] = {}
        self.tls: str | None = None
        self.broken = False

    @classmethod
    async def open(cls, host: str, port: int, *, lmtp: bool, helo: str, tls_mode: str,
                   tls_context: ssl.SSLContext | None, timeouts: Timeouts,
                   remote: str | None = None,
                   auth: tuple[str, str] | None = None) -> MailClient:
        """Connect, read the greeting, say EHLO/LHLO, STARTTLS as *tls_mode* asks, and
        authenticate with *auth* (user, password) when given (a smarthost)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=MAX_REPLY_LINE * 2),
                timeouts.connect)
        except TimeoutError:
            raise SessionFailed(Reply(451, "4.4.1", f"connect to {host}:{port} timed out")) from None
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise SessionFailed(Reply(451, "4.4.1", f"connect to {host}:{port}: {reason}")) from None
        client = cls(reader, writer, lmtp, timeouts, remote or host)
        try:
            greeting = await client._read(timeouts.greeting)
            if greeting.code != 220:
                raise SessionFailed(client._as_temporary(greeting, "greeting"))
            await client._hello(helo)
            if tls_mode != "none" and "STARTTLS" in client.extensions:
                await client._starttls(host, helo, tls_context)
            elif tls_mode == "required":
                raise SessionFailed(Reply(451, "4.7.10",
                                          f"{client.remote} does not offer STARTTLS, "
                                          "which this route requires"))
            if auth is not None:
                await client._authenticate(*auth, allow_plaintext=tls_mode == "none")
        except BaseException:
            client.abort()
            raise
        return client

    async def send(self, tx: Transaction) -> dict[str, Reply]:
        """Run one mail transaction; the reply for each recipient (2xx: delivered).

        Raises :class:`SessionFailed` when the connection breaks before the server
        answered for the recipients (the outcome is then unknown to us: deferred).
        """
        if any(_BREAKS.search(a) for a in (tx.sender, *tx.recipients)):
            # Ingress never stores such an address; refuse rather than inject a command.
            return dict.fromkeys(tx.recipients, Reply(553, "5.1.3", "address with a line "
                                                                    "break or NUL"))
        if tx.smtputf8 and "SMTPUTF8" not in self.extensions:
            return dict.fromkeys(tx.recipients, Reply(
                553, "5.6.7", f"{self.remote} does not support SMTPUTF8, which this message needs"))
        mail = f"MAIL FROM:<{tx.sender}>" + "".join(" " + p for p in tx.mail_params)
        rcpts = [f"RCPT TO:<{address}>" + "".join(" " + p for p in params)
                 for address, params in zip(tx.recipients,
                                            tx.rcpt_params or [()] * len(tx.recipients),
                                            strict=True)]
        pipelining = "PIPELINING" in self.extensions
        if pipelining:
            self._write(mail, *rcpts, "DATA")
            # One reply group, one deadline (RFC 2920 servers answer them together).
            replies = await self._read_many(2 + len(rcpts), self.timeouts.command)
            mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        else:
            self._write(mail)
            mail_reply = await self._read(self.timeouts.command)
            if mail_reply.code != 250:
                return dict.fromkeys(tx.recipients, mail_reply)
            rcpt_replies = []
            for line in rcpts:
                self._write(line)
                rcpt_replies.append(await self._read(self.timeouts.command))
            data_reply = None
        if mail_reply.code != 250:
            await self._reset_after(data_reply)
            return dict.fromkeys(tx.recipients, mail_reply)
        replies = dict(zip(tx.recipients, rcpt_replies, strict=True))
        accepted = [a for a, r in replies.items() if r.code in (250, 251)]
        if not accepted:
            await self._reset_after(data_reply)
            return replies
        if data_reply is None:
            self._write("DATA")
            data_reply = await self._read(self.timeouts.command)
        if data_reply.code != 354:
            await self.reset()
            return replies | dict.fromkeys(accepted, data_reply)
        await self._send_data(tx.data)
        if self.lmtp:
            for address in accepted:
                replies[address] = await self._read(self.timeouts.data_end)
        else:
            final = await self._read(self.timeouts.data_end)
            replies.update(dict.fromkeys(accepted, final))
        return replies

    async def reset(self) -> None:
        self._write("RSET")
        await self._read(self.timeouts.command)

    async def quit(self) -> None:
        """Say QUIT politely if the connection still works; always close it."""
        try:
            if not self.broken:
                self._write("QUIT")
                await self._read(min(self.timeouts.command, 5.0))
        except SessionFailed:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        self.broken = True
        self._writer.transport.abort()

    # -- internals ---------------------------------------------------------------------

    async def _reset_after(self, data_reply: Reply | None) -> None:
        if data_reply is not None and data_reply.code == 354:
            # A server that said 354 with no valid recipient (RFC 2920 forbids it): end
            # the empty message so the next transaction starts clean.
            self._writer.write(b".\r\n")
            await self._read(self.timeouts.data_end)
        await self.reset()

    async def _hello(self, helo: str) -> None:
        verb = "LHLO" if self.lmtp else "EHLO"
        self._write(f"{verb} {helo}")
        (reply_lines,) = await self._read_lines(self.timeouts.command)
        reply = parse_reply(reply_lines)
        if reply.code != 250:
            if self.lmtp:
                raise SessionFailed(self._as_temporary(reply, "LHLO"))
            self._write(f"HELO {helo}")
            reply = await self._read(self.timeouts.command)
            if reply.code != 250:
                raise SessionFailed(self._as_temporary(reply, "HELO"))
            self.extensions = {}
            return
        self.extensions = {}
        for line in reply_lines[1:]:
            keyword, _, value = line[4:].decode("ascii", "replace").strip().partition(" ")
            self.extensions[keyword.upper()] = value

    async def _starttls(self, host: str, helo: str, context: ssl.SSLContext | None) -> None:
        self._write("STARTTLS")
        reply = await self._read(self.timeouts.command)
        if reply.code != 220:
            raise SessionFailed(self._as_temporary(reply, "STARTTLS"))
        if context is None:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            await asyncio.wait_for(self._writer.start_tls(
                context, server_hostname=host if context.check_hostname else None),
                self.timeouts.command)
        except (ssl.SSLError, OSError, TimeoutError) as error:
            raise SessionFailed(Reply(451, "4.7.5", f"TLS with {self.remote} failed: "
                                                    f"{error}")) from None
        ssl_object = self._writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls = f"{ssl_object.version()}:{ssl_object.cipher()[0]}"
        await self._hello(helo)  # RFC 3207: forget what was said before TLS

    async def _authenticate(self, user: str, password: str, allow_plaintext: bool) -> None:
        """AUTH PLAIN (RFC 4616), or LOGIN; never a password in clear unless tls is none."""
        if self.tls is None and not allow_plaintext:
            raise SessionFailed(Reply(451, "4.7.0", f"{self.remote}: no TLS, so the "
                                                    "password is not sent"))
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            self._write(f"AUTH PLAIN {token}")
            reply = await self._read(self.timeouts.command)
        elif "LOGIN" in mechanisms:
            self._write("AUTH LOGIN")
            reply = await self._read(self.timeouts.command)
            for secret in (user, password):
                if reply.code != 334:
                    break
                self._write(base64.b64encode(secret.encode()).decode())
                reply = await self._read(self.timeouts.command)
        else:
            raise SessionFailed(Reply(451, "4.7.0", f"{self.remote} offers no AUTH PLAIN or "
                                                    "LOGIN"))
        if reply.code != 235:
            # A wrong password is the operator's to fix: the mail waits, it does not bounce.
            raise SessionFailed(Reply(451, "4.7.0", f"{self.remote} refused our "
                                                    f"credentials: {reply}"))

    def _write(self, *lines: str) -> None:
        if self.broken:
            raise SessionFailed(Reply(451, "4.4.2", f"connection to {self.remote} lost"))
        self._writer.write("".join(line + "\r\n" for line in lines).encode("utf-8"))

    async def _send_data(self, data: bytes) -> None:
        self._writer.write(canonical_data(data))
        try:
            await asyncio.wait_for(self._writer.drain(), self.timeouts.data_end)
        except (OSError, TimeoutError) as error:
            self.abort()
            raise SessionFailed(Reply(451, "4.4.2", f"{self.remote} stopped reading the "
                                                    f"message: {error or 'timeout'}")) from None

    async def _read(self, seconds: float) -> Reply:
        return (await self._read_many(1, seconds))[0]

    async def _read_many(self, count: int, seconds: float) -> list[Reply]:
        return [parse_reply(lines) for lines in await self._read_lines(seconds, count)]

    async def _read_lines(self, seconds: float, count: int = 1) -> list[list[bytes]]:
        """The lines of each of the next *count* replies, all within *seconds*."""
        groups: list[list[bytes]] = []
        lines: list[bytes] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    line = await self._reader.readuntil(b"\n")
                    if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in b" -\r\n":
                        raise SessionFailed(Reply(451, "4.5.0", f"{self.remote} sent a "
                                                                "malformed reply"))
                    lines.append(line)
                    if line[3:4] == b"-" and len(lines) < MAX_REPLY_LINES:
                        continue
                    groups.append(lines)
                    lines = []
                    if len(groups) == count:
                        return groups
        except TimeoutError:
            self.abort()
            raise SessionFailed(Reply(451, "4.4.2", f"{self.remote} did not answer within "
                                                    f"{seconds:g}s")) from None
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.abort()
            raise SessionFailed(Reply(451, "4.4.2", f"connection to {self.remote} "
                                                    "lost")) from None
        except asyncio.LimitOverrunError:
            self.abort()
            raise SessionFailed(Reply(451, "4.5.0", f"{self.remote} sent an over-long "
                                                    "reply line")) from None
        except SessionFailed:
            self.abort()
            raise

    def _as_temporary(self, reply: Reply, stage: str) -> Reply:
        """A refusal of the whole session (greeting, EHLO): the route is not usable now."""
        text = f"{self.remote} refused {stage}: {reply}"
        if reply.permanent:
            return Reply(reply.code, reply.enhanced or "5.0.0", text)
        return Reply(reply.code, reply.enhanced or "4.0.0", text)
