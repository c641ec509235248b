"""RFC 5321 paths (``<local@domain>``) parsed strictly, as a gateway must.

A path that does not parse is a syntax error (501); what a parsed address may
do (relay or not) is decided in :mod:`spoolgate.ingress.recipients`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spoolgate.mail.reply import SmtpError

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010ffff]+")
_LABEL = re.compile(r"[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\-\x80-\U0010ffff]*[A-Za-z0-9\x80-\U0010ffff])?")
MAX_LOCAL, MAX_DOMAIN, MAX_PATH = 64, 255, 256


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A parsed mailbox: local part as it will be used (unquoted if it needed no quotes)."""

    local: str
    domain: str           # lower-cased; "[1.2.3.4]" for an address literal
    quoted: bool          # the local part needs quoting (it holds specials or spaces)

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    def __str__(self) -> str:
        local = _quote(self.local) if self.quoted else self.local
        return f"{local}@{self.domain}"


def _quote(local: str) -> str:
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _closing_bracket(text: str) -> int:
    """Index of the '>' that closes the path in *text* (which starts with '<'), or -1."""
    quoted = escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` into the path's inside and the parameter text."""
    arg = arg.strip()
    if not arg.startswith("<"):
        inside, _, rest = arg.partition(" ")
        return inside, rest.strip()
    end = _closing_bracket(arg)
    if end < 0:
        raise ValueError("missing '>'")
    rest = arg[end + 1:]
    if rest and not rest.startswith(" "):
        raise ValueError("text after '>'")
    return arg[1:end], rest.strip()


def _parse_local(local: str, utf8: bool) -> tuple[str, bool]:
    if local.startswith('"'):
        if len(local) < 2 or not local.endswith('"'):
            raise ValueError("unterminated quoted local part")
        out, escaped = [], False
        for char in local[1:-1]:
            if not utf8 and ord(char) > 126:
                raise ValueError("non-ASCII local part without SMTPUTF8")
            if escaped:
                # quoted-pairSMTP is a backslash and a printable character (RFC 5321 4.1.2).
                if ord(char) < 32 or ord(char) == 127:
                    raise ValueError("control character in quoted local part")
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"' or ord(char) < 32 or ord(char) == 127:
                raise ValueError("bad character in quoted local part")
            else:
                out.append(char)
        if escaped:
            raise ValueError("dangling backslash in local part")
        value = "".join(out)
        needs_quotes = not value or not all(_ATEXT.fullmatch(atom) for atom in value.split("."))
        return value, needs_quotes
    if not local or not all(_ATEXT.fullmatch(atom) for atom in local.split(".")):
        raise ValueError("bad local part")
    if not utf8 and not local.isascii():
        raise ValueError("non-ASCII local part without SMTPUTF8")
    return local, False


def _parse_domain(domain: str, utf8: bool) -> str:
    if domain.startswith("["):
        # dcontent of RFC 5321 4.1.3: printable ASCII except '[', ']' and '\\'.
        inside = domain[1:-1]
        if not domain.endswith("]") or not inside or any(
                not 33 <= ord(c) <= 126 or c in "[]\\" for c in inside):
            raise ValueError("bad address literal")
        return domain.lower()
    if not domain or len(domain) > MAX_DOMAIN:
        raise ValueError("bad domain")
    labels = domain.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("bad domain")
    if not domain.isascii():
        if not utf8:
            raise ValueError("non-ASCII domain without SMTPUTF8")
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("bad internationalised domain") from None
    return domain.lower()


def parse_mailbox(path: str, utf8: bool = False) -> Mailbox:
    """Parse the inside of a non-null path; a source route (``@a,@b:``) is dropped (RFC 5321 §4.1.2)."""
    if len(path) > MAX_PATH:
        raise ValueError("path longer than 256 characters")
    if path.startswith("@"):
        route, colon, path = path.partition(":")
        if not colon or not all(hop.startswith("@") and _parse_domain(hop[1:], utf8)
                                for hop in route.split(",")):
            raise ValueError("bad source route")
    local, at, domain = path.rpartition("@")
    if not at:
        raise ValueError("no '@domain'")
    value, quoted = _parse_local(local, utf8)
    if len(value.encode("utf-8")) > MAX_LOCAL:
        raise ValueError("local part longer than 64 octets")
    return Mailbox(value, _parse_domain(domain, utf8), quoted)


def parse_reverse_path(arg: str, utf8_allowed: bool) -> tuple[Mailbox | None, str]:
    """``MAIL FROM:`` argument -> (sender or None for ``<>``, parameter text)."""
    try:
        inside, params = split_path(arg)
        if inside == "":
            return None, params
        return parse_mailbox(inside, utf8_allowed), params
    except ValueError as error:
        raise SmtpError(501, "5.1.7", f"Bad sender address syntax: {error}") from None


def parse_forward_path(arg: str, utf8_allowed: bool) -> tuple[Mailbox, str]:
    """``RCPT TO:`` argument -> (recipient, parameter text)."""
    try:
        inside, params = split_path(arg)
        if inside == "":
            raise ValueError("empty recipient")
        return parse_mailbox(inside, utf8_allowed), params
    except ValueError as error:
        raise SmtpError(501, "5.1.3", f"Bad recipient address syntax: {error}") from None
