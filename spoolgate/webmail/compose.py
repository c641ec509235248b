"""Composing mail in the webmail: drafts, replies and forwards, and the MIME that is sent.

Owns the message a user sends: From fixed to the user's address, Date and Message-ID
generated, Bcc only in the envelope (never a header), In-Reply-To/References for
replies, quoting, attachments (RFC 2231 filenames) and forwarding inline or as
message/rfc822. Addresses follow the gateway's path rules for ASCII mail (a dot-atom
local part of at most 64 octets, LDH domain labels) because the message goes through
the same intake as SMTP mail. Pure functions over values; the only failure is
:class:`ComposeError`, whose text is meant for the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from spoolgate.mime.parse import ParsedMessage

_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_MSGID = re.compile(r"<[^<>\s]{1,250}>")
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv)\s*:\s*", re.IGNORECASE)
_FORWARD_PREFIX = re.compile(r"^\s*(fwd?|wg)\s*:\s*", re.IGNORECASE)
MAX_LOCAL, MAX_DOMAIN = 64, 255


class ComposeError(ValueError):
    """What is wrong with a draft, in words for the user."""


@dataclass(frozen=True, slots=True)
class Upload:
    """One attached file as the browser sent it."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Draft:
    """The compose form's fields (addresses as typed, comma-separated)."""

    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    forward_of: str = ""    # queue ID whose original is attached as message/rfc822
    uploads: tuple[Upload, ...] = field(default=())


def check_address(address: str) -> str:
    """*address* (an addr-spec) as sent, or :class:`ComposeError` saying why it cannot be."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise ComposeError(f"{address!r} is not an email address (it needs name@domain).")
    if not all(_ATOM.fullmatch(atom) for atom in local.split(".")) \
            or len(local.encode()) > MAX_LOCAL:
        raise ComposeError(f"{address!r} is not an address this gateway can send to "
                           "(unusual characters before the @).")
    if len(domain) > MAX_DOMAIN or not all(_LABEL.fullmatch(p) for p in domain.split(".")):
        raise ComposeError(f"{address!r} has a domain that is not valid.")
    return f"{local}@{domain.lower()}"


def parse_addresses(label: str, text: str) -> tuple[Address, ...]:
    """The addresses of one field ("Name <a@b>, c@d"); :class:`ComposeError` names the field."""
    if not text.strip():
        return ()
    if "\r" in text or "\n" in text:
        raise ComposeError(f"{label}: put the addresses on one line.")
    found = []
    for name, address in getaddresses([text]):
        if not address:
            raise ComposeError(f"{label}: could not read the addresses {text!r}; separate "
                               "them with commas.")
        try:
            spec = check_address(address)
        except ComposeError as error:
            raise ComposeError(f"{label}: {error}") from None
        local, _, domain = spec.rpartition("@")
        found.append(Address(display_name=name.strip(), username=local, domain=domain))
    return tuple(found)


def envelope_recipients(*fields: tuple[Address, ...]) -> tuple[str, ...]:
    """Every address of *fields* once (case-insensitively), in order."""
    seen: dict[str, str] = {}
    for addresses in fields:
        for address in addresses:
            seen.setdefault(address.addr_spec.lower(), address.addr_spec)
    return tuple(seen.values())


def message_ids(text: str) -> str:
    """Only the ``<id>`` tokens of *text* (so a form field cannot inject a header)."""
    return " ".join(_MSGID.findall(text))


def build_message(sender: str, draft: Draft, *, hostname: str, now: datetime,
                  original: bytes | None = None) -> EmailMessage:
    """The message to send: headers, the text body, uploads and a forwarded *original*."""
    msg = EmailMessage(policy=policy.SMTP)
    local, _, domain = sender.rpartition("@")
    msg["From"] = Address(username=local, domain=domain)
    for label in ("To", "Cc"):
        addresses = parse_addresses(label, getattr(draft, label.lower()))
        if addresses:
            msg[label] = addresses
    msg["Subject"] = " ".join(draft.subject.split())
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=hostname)
    if message_ids(draft.in_reply_to):
        msg["In-Reply-To"] = message_ids(draft.in_reply_to)
    if message_ids(draft.references):
        msg["References"] = message_ids(draft.references)
    msg["MIME-Version"] = "1.0"
    body = draft.body.replace("\r\n", "\n").replace("\r", "\n")
    msg.set_content(body, cte=None if body.isascii() else "quoted-printable")
    for upload in draft.uploads:
        maintype, _, subtype = _content_type(upload.content_type).partition("/")
        msg.add_attachment(upload.data, maintype=maintype, subtype=subtype,
                           filename=upload.filename or "attachment")
    if original is not None:
        _attach_original(msg, original)
    return msg


def _content_type(value: str) -> str:
    value = value.split(";")[0].strip().lower()
    if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", value) and \
            not value.startswith(("text/", "multipart/", "message/")):
        return value
    return "application/octet-stream"  # text/* would be re-encoded; keep the bytes exact


def _attach_original(msg: EmailMessage, original: bytes) -> None:
    """The forwarded message as a message/rfc822 part (headers kept as they came)."""
    inner = message_from_bytes(original.replace(b"\r\n", b"\n"), policy=policy.compat32)
    msg.add_attachment(inner, filename="forwarded.eml")


def message_bytes(msg: EmailMessage) -> bytes:
    """The message as it goes over SMTP (CRLF line ends)."""
    return msg.as_bytes(policy=policy.SMTP)


def reply_subject(subject: str) -> str:
    return "Re: " + _REPLY_PREFIX.sub("", subject, count=1)


def forward_subject(subject: str) -> str:
    return "Fwd: " + _FORWARD_PREFIX.sub("", subject, count=1)


def quote(text: str) -> str:
    """*text* with every line quoted ("> ")."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    return "\n".join(f"> {line}" if line else ">" for line in lines) + "\n"


def _formatted(addresses: list[tuple[str, str]]) -> str:
    return ", ".join(str(Address(display_name=n, addr_spec=a)) if n else a
                     for n, a in addresses)


def reply_draft(parsed: ParsedMessage, user: str, *, reply_all: bool) -> Draft:
    """A reply to *parsed*: to its Reply-To (else From), and with *reply_all* its To and Cc
    too, the user left out; quoted, threaded by In-Reply-To and References."""
    author = getaddresses([parsed.header("Reply-To") or parsed.from_])
    to = _without(author, {user.lower()})
    cc: list[tuple[str, str]] = []
    if reply_all:
        taken = {user.lower()} | {a.lower() for _, a in to}
        cc = _without(getaddresses([parsed.to, parsed.cc]), taken)
    message_id = message_ids(parsed.message_id)
    references = " ".join(filter(None, [message_ids(parsed.header("References") or ""),
                                        message_id]))
    body = f"\n\nOn {parsed.date or 'an earlier date'}, {parsed.from_ or 'someone'} wrote:\n"
    return Draft(to=_formatted(to), cc=_formatted(cc), subject=reply_subject(parsed.subject),
                 body=body + quote(parsed.text_body()), in_reply_to=message_id,
                 references=references)


def _without(addresses: list[tuple[str, str]], excluded: set[str]) -> list[tuple[str, str]]:
    kept: list[tuple[str, str]] = []
    for name, address in addresses:
        if address and address.lower() not in excluded:
            excluded = excluded | {address.lower()}
            kept.append((name, address))
    return kept


def forward_draft(parsed: ParsedMessage, queue_id: str, *, as_attachment: bool) -> Draft:
    """A forward of *parsed*: its text inline under the original headers, or the whole
    message attached (message/rfc822 of the stored bytes)."""
    subject = forward_subject(parsed.subject)
    if as_attachment:
        return Draft(subject=subject, forward_of=queue_id)
    lines = ["", "", "---------- Forwarded message ----------",
             f"From: {parsed.from_}", f"Date: {parsed.date}", f"Subject: {parsed.subject}",
             f"To: {parsed.to}"]
    if parsed.cc:
        lines.append(f"Cc: {parsed.cc}")
    return Draft(subject=subject, body="\n".join(lines) + "\n\n" + parsed.text_body())
