"""Asking the company's IMAP server whether a webmail password is right.

Owns one blocking IMAP exchange (stdlib :mod:`imaplib`): connect with implicit TLS
(imaps://) or STARTTLS (imap://, refused if the server does not offer it), LOGIN, LOGOUT,
every step under a short socket timeout. The answer is a :class:`ImapVerdict`: the server
accepted, the server rejected, or it gave no usable answer (refused, timeout, TLS failure,
STARTTLS missing, a temporary ``[UNAVAILABLE]``), in which case the caller falls back to
its local verifier. A server that greeted us is up, and so decides: if it then gives no
answer to the password within :data:`LOGIN_WAIT` times the timeout (Dovecot delays
answers by up to 15 s after failed logins from one address), the password is refused,
so that making the server slow cannot bring back a password it no longer accepts. A password is never sent without TLS unless the settings say
``tls = "none"``, which the configuration allows on loopback only. Passwords and server
replies that could echo them are never logged; callers run this in a worker thread.
"""

from __future__ import annotations

import enum
import imaplib
import logging
import ssl

from spoolgate.config import ImapSettings

log = logging.getLogger(__name__)

# Codes in a NO reply that mean "cannot decide now", not "wrong password" (RFC 5530).
_NOT_A_VERDICT = (b"[UNAVAILABLE]", b"[SERVERBUG]", b"[LIMIT]")
LOGIN_WAIT = 4  # times the connection timeout: 20 s by default


class ImapVerdict(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"   # no answer we can trust: use the local verifier


def check_password(server: ImapSettings, email: str, password: str,
                   timeout: float = 5.0) -> ImapVerdict:
    """Whether *server* accepts *email* with *password* (blocking, up to a few *timeout*s)."""
    if any(c in password or c in email for c in "\r\n\0"):
        return ImapVerdict.REJECTED  # never a real password; would break the IMAP line
    try:
        connection = _connect(server, timeout)
    except (OSError, imaplib.IMAP4.error, ssl.CertificateError) as error:
        log.warning("webmail IMAP check: no answer from %s (%s): using the local verifier",
                    server, _reason(error))
        return ImapVerdict.UNAVAILABLE
    try:
        connection.sock.settimeout(timeout * LOGIN_WAIT)
        return _login(connection, server, email, password)
    finally:
        try:
            connection.sock.settimeout(min(timeout, 1.0))  # nothing more to wait for
            connection.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _context(server: ImapSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.tls_ca) if server.tls_ca else None)


def _connect(server: ImapSettings, timeout: float) -> imaplib.IMAP4:
    if server.tls == "implicit":
        return imaplib.IMAP4_SSL(server.host, server.port, ssl_context=_context(server),
                                 timeout=timeout)
    connection = imaplib.IMAP4(server.host, server.port, timeout=timeout)
    if server.tls == "starttls":
        try:
            connection.starttls(_context(server))  # raises unless offered and completed
        except BaseException:
            connection.shutdown()
            raise
    return connection


def _login(connection: imaplib.IMAP4, server: ImapSettings, email: str,
           password: str) -> ImapVerdict:
    try:
        if password.isascii() and email.isascii():
            connection.login(_quoted(email), password)  # imaplib quotes the password only
        else:  # LOGIN takes ASCII only; PLAIN carries UTF-8 (RFC 4616)
            payload = f"\0{email}\0{password}".encode()
            connection.authenticate("PLAIN", lambda _challenge: payload)
    except imaplib.IMAP4.abort as error:
        log.warning("webmail IMAP check: %s dropped the connection (%s): using the local "
                    "verifier", server, type(error).__name__)
        return ImapVerdict.UNAVAILABLE
    except imaplib.IMAP4.error as error:
        text = str(error).encode(errors="replace").upper()
        if any(code in text for code in _NOT_A_VERDICT):
            log.warning("webmail IMAP check: %s cannot decide now: using the local verifier",
                        server)
            return ImapVerdict.UNAVAILABLE
        return ImapVerdict.REJECTED
    except TimeoutError:
        log.warning("webmail IMAP check: %s did not answer the password in time: refused",
                    server)
        return ImapVerdict.REJECTED
    except OSError as error:
        log.warning("webmail IMAP check: %s dropped the connection (%s): using the local "
                    "verifier", server, _reason(error))
        return ImapVerdict.UNAVAILABLE
    return ImapVerdict.ACCEPTED


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(error: BaseException) -> str:
    """What went wrong, without any server text (which could echo what we sent)."""
    if isinstance(error, (ssl.SSLError, ssl.CertificateError)):
        return f"TLS: {getattr(error, 'reason', None) or type(error).__name__}"
    if isinstance(error, imaplib.IMAP4.error):
        return "refused at greeting or STARTTLS (not offered?)"
    return getattr(error, "strerror", None) or type(error).__name__
