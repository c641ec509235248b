"""The daily quarantine digest: signed one-click links, the message, its sender, the pages.

Owns the digest links, the digest message and the ``/digest/{token}`` pages. A link's
token is signed (HMAC-SHA256, a key kept in the store) over its action (release, delete,
allow the sender), queue ID, user and expiry, so nobody can make or alter one; it works
once (its hash is recorded when used, on any node). Mail security scanners open links
in mail, so a GET only shows what the link will do, with one button; the POST does it,
with the token as the authority (no session needed; a disabled user's links stop working).
Expired, used, altered and no longer allowed links get a calm page saying so.

:class:`DigestSender` runs on the primary node: once a day, from ``[digest] hour`` in the
webmail's time zone, each opted-in user with quarantined mail that arrived since their
last digest gets one, queued through intake like any mail. Which node sends it is decided
in the store (:meth:`~spoolgate.store.digest.DigestStore.claim`), so restarts and several
nodes never send one twice; a digest that cannot be queued is due again on the next pass.
Store failures are logged (once while they last) and the next pass tries again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import html
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

import anyio.from_thread
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from spoolgate.intake.release import (
    Cause,
    ReleaseOutcome,
    quarantine_cause,
    release_quarantined,
    user_may_release,
)
from spoolgate.mail.envelope import ClientInfo, Envelope, Notify, Recipient
from spoolgate.mail.reply import SmtpError
from spoolgate.mime.parse import parse_message
from spoolgate.store.accounts import Accounts, WebSession
from spoolgate.store.digest import DigestStore
from spoolgate.store.mailbox import Folder, Mailbox, MailboxItem
from spoolgate.store.queue import Queue
from spoolgate.store.senders import SenderRules
from spoolgate.store.store import Store, StoreError
from spoolgate.webmail import presenting
from spoolgate.webmail.feedback import DEFAULT_USER_RELEASE
from spoolgate.webmail.site import Site, site_of

log = logging.getLogger("spoolgate.digest")

ACTIONS = ("release", "delete", "allow")
CHECK_INTERVAL = 60.0        # seconds between passes of the sender
FIRST_DIGEST_DAYS = 7        # a first digest lists what arrived in the last week
MAX_ENTRIES = 100            # messages one digest lists; the rest are counted
MAX_TOKEN = 2048             # characters: anything longer is not one of ours
_CONTEXT = b"spoolgate quarantine digest link\n"


# -- links ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DigestLink:
    """What one link does: *action* on *queue_id* for *user*, until *expires_at*."""

    action: str
    queue_id: str
    user: str
    expires_at: int


class LinkError(Exception):
    """A link that cannot be used: ``invalid`` (altered or not ours) or ``expired``."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + payload, hashlib.sha256).digest()


def sign_link(secret: bytes, link: DigestLink) -> str:
    """The URL-safe token of *link* (its fields, then their MAC)."""
    if link.action not in ACTIONS:
        raise ValueError(f"unknown digest action {link.action!r}")
    payload = "\n".join((link.action, link.queue_id, link.user.lower(),
                         str(int(link.expires_at)))).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify_link(secret: bytes, token: str, now: float) -> DigestLink:
    """The link *token* stands for; :class:`LinkError` when it was altered, is not ours,
    or has expired."""
    encoded, dot, mac = token.partition(".")
    if not dot or len(token) > MAX_TOKEN:
        raise LinkError("invalid")
    try:
        payload, sent = _unb64(encoded), _unb64(mac)
    except (binascii.Error, ValueError):
        raise LinkError("invalid") from None
    # One spelling per link: base64 decoding forgives padding, '+' for '-' and spare low
    # bits, and every spelling of a used link would hash to a new "unused" token.
    if _b64(payload) != encoded or _b64(sent) != mac:
        raise LinkError("invalid")
    if not hmac.compare_digest(sent, _mac(secret, payload)):
        raise LinkError("invalid")
    fields = payload.decode("utf-8", "replace").split("\n")
    if len(fields) != 4 or fields[0] not in ACTIONS or not fields[3].isdigit():
        raise LinkError("invalid")
    link = DigestLink(fields[0], fields[1], fields[2], int(fields[3]))
    if now >= link.expires_at:
        raise LinkError("expired")
    return link


def token_hash(token: str) -> str:
    """What the store keeps of a used link."""
    return hashlib.sha256(token.encode()).hexdigest()


# -- the message ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DigestEntry:
    """One quarantined message as the digest lists it."""

    queue_id: str
    sender: str           # the envelope sender ("" for a bounce)
    from_text: str
    subject: str
    received_at: float
    virus: bool           # quarantined because a scanner found malware


def link_actions(entry: DigestEntry, user_release: str) -> tuple[str, ...]:
    """The links one entry gets: release only when the user may release it (never a
    virus), allow only with a sender to allow (and not for a virus), delete always."""
    cause = Cause.VIRUS if entry.virus else Cause.SPAM
    actions = []
    if not entry.virus and user_may_release(user_release, cause):
        actions.append("release")
    actions.append("delete")
    if entry.sender and not entry.virus:
        actions.append("allow")
    return tuple(actions)


LABELS = {"release": "Release", "delete": "Delete", "allow": "Always allow sender"}


def build_digest(user: str, entries: Sequence[DigestEntry], links: Mapping[str, Mapping[str, str]],
                 zone: ZoneInfo, now: float, more: int = 0, quarantine_url: str = "") -> bytes:
    """The digest message to *user*: a text and an HTML part listing *entries* with their
    *links* (queue ID -> action -> URL); *more* messages were left out."""
    domain = user.rpartition("@")[2]
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Mail gateway <postmaster@{domain}>"
    msg["To"] = user
    count = len(entries) + more
    msg["Subject"] = f"Quarantine summary: {count} new message{'s' if count != 1 else ''}"
    msg["Date"] = format_datetime(dt.datetime.fromtimestamp(now, dt.UTC))
    msg["Message-ID"] = make_msgid("digest", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(_text(entries, links, zone, more, quarantine_url))
    msg.add_alternative(_html(entries, links, zone, more, quarantine_url), subtype="html")
    return msg.as_bytes()


def _describe(entry: DigestEntry, zone: ZoneInfo) -> tuple[str, str, str, str]:
    sender = entry.from_text or entry.sender or "(no sender)"
    kind = "virus" if entry.virus else "spam"
    return (sender, entry.subject or "(no subject)",
            presenting.long_time(entry.received_at, zone), kind)


_INTRO = ("These messages were held in your quarantine since your last summary. "
          "Each link opens a page that asks you to confirm; links work once and expire.")


def _text(entries: Sequence[DigestEntry], links: Mapping[str, Mapping[str, str]],
          zone: ZoneInfo, more: int, quarantine_url: str) -> str:
    lines = [_INTRO, ""]
    for entry in entries:
        sender, subject, when, kind = _describe(entry, zone)
        lines += [f"From:    {sender}", f"Subject: {subject}", f"Date:    {when}",
                  f"Held as: {kind}"]
        lines += [f"  {LABELS[a]}: {url}" for a, url in links.get(entry.queue_id, {}).items()]
        lines.append("")
    if more:
        lines.append(f"And {more} more: open your quarantine to see them all.")
    if quarantine_url:
        lines.append(f"Your quarantine: {quarantine_url}")
    lines += ["", "You get this summary because you asked for it on your Quarantine page; "
                  "you can turn it off there."]
    return "\n".join(lines) + "\n"


def _html(entries: Sequence[DigestEntry], links: Mapping[str, Mapping[str, str]],
          zone: ZoneInfo, more: int, quarantine_url: str) -> str:
    e = html.escape
    rows = []
    for entry in entries:
        sender, subject, when, kind = _describe(entry, zone)
        actions = " · ".join(f'<a href="{e(url)}">{e(LABELS[a])}</a>'
                             for a, url in links.get(entry.queue_id, {}).items())
        rows.append(f"<tr><td>{e(sender)}</td><td>{e(subject)}</td><td>{e(when)}</td>"
                    f"<td>{kind}</td><td>{actions}</td></tr>")
    tail = f"<p>And {more} more: open your quarantine to see them all.</p>" if more else ""
    if quarantine_url:
        tail += f'<p><a href="{e(quarantine_url)}">Open your quarantine</a></p>'
    return ("<!doctype html><html><body>"
            f"<p>{e(_INTRO)}</p>"
            '<table border="1" cellpadding="4" cellspacing="0">'
            "<tr><th>From</th><th>Subject</th><th>Date</th><th>Held as</th><th></th></tr>"
            + "".join(rows) + "</table>" + tail +
            "<p>You get this summary because you asked for it on your Quarantine page; "
            "you can turn it off there.</p></body></html>")


def quarantined_since(store: Store, node: str, user: str, since: float,
                      limit: int = MAX_ENTRIES) -> tuple[list[DigestEntry], int]:
    """The user's quarantined messages that arrived after *since*, newest first (up to
    *limit*), and how many more there are."""
    mailbox = Mailbox(store, node)
    items = [i for i in mailbox.page(user, Folder.QUARANTINE, limit + 1000)
             if i.queued_at > since]
    shown = items[:limit]
    reasons = mailbox.quarantine_reasons([i.queue_id for i in shown])
    entries = []
    for item in shown:
        from_text, subject = _headers(store, item)
        entries.append(DigestEntry(
            item.queue_id, item.sender, from_text, subject, item.queued_at,
            quarantine_cause(reasons.get(item.queue_id)) is Cause.VIRUS))
    return entries, len(items) - len(shown)


def _headers(store: Store, item: MailboxItem) -> tuple[str, str]:
    if item.index is not None:
        return item.index.from_text, item.index.subject
    entry = presenting.index_entry(parse_message(store.message_data(item.queue_id) or b""))
    return entry.from_text, entry.subject


# -- sending -------------------------------------------------------------------------------

def last_slot(now: float, hour: int, zone: ZoneInfo) -> float:
    """The latest moment at *hour* o'clock in *zone* not after *now*."""
    local = dt.datetime.fromtimestamp(now, zone)
    slot = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if slot > local:
        slot = (local - dt.timedelta(days=1)).replace(hour=hour, minute=0, second=0,
                                                       microsecond=0)
    return slot.timestamp()


Submit = Callable[[Envelope, bytes], Awaitable[str]]


class DigestSender:
    """Sends each opted-in user's digest once a day (see the module docstring)."""

    def __init__(self, store: Store, submit: Submit, *, public_url: str, hour: int,
                 zone: ZoneInfo, link_days: int = 7, node: str = "digest",
                 user_release: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.submit = submit
        self.public_url = public_url.rstrip("/")
        self.hour = hour
        self.zone = zone
        self.link_seconds = link_days * 86400
        self.node = node
        self.user_release = dict(user_release or {})
        self.clock = clock
        self.digests = DigestStore(store)
        self._failing = False

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        """Pass after pass until cancelled."""
        while True:
            try:
                await self.send_due()
            except StoreError as error:
                if not self._failing:
                    log.warning("quarantine digests: the store failed, retrying every "
                                "%gs (logged once): %s", interval, error)
                self._failing = True
            except Exception:  # never let one bad pass end the digests until a restart
                log.exception("quarantine digests: a pass failed; trying again in %gs",
                              interval)
            else:
                self._failing = False
            await asyncio.sleep(interval)

    async def send_due(self, force: bool = False) -> int:
        """Send the digests due now (with *force*, every subscriber's, whatever the hour);
        return how many were queued."""
        now = self.clock()
        slot = now if force else last_slot(now, self.hour, self.zone)
        sent = 0
        for subscriber in await asyncio.to_thread(self.digests.subscribers):
            previous = subscriber.sent_at
            if previous is not None and previous >= slot:
                continue
            if not await asyncio.to_thread(self.digests.claim, subscriber.email, previous, now):
                continue  # another node (or pass) has it
            sent += await self._send_one(subscriber.email, previous, now)
        return sent

    async def _send_one(self, user: str, previous: float | None, now: float) -> int:
        since = previous if previous is not None else now - FIRST_DIGEST_DAYS * 86400
        try:
            entries, more = await asyncio.to_thread(
                quarantined_since, self.store, self.node, user, since)
            if not entries:
                return 0
            data = await asyncio.to_thread(self.message, user, entries, more, now)
            envelope = Envelope("", (Recipient(user, frozenset({Notify.NEVER})),),
                                ClientInfo("127.0.0.1", "localhost"))
            queue_id = await self.submit(envelope, data)
        except (SmtpError, StoreError) as error:
            log.warning("quarantine digest to %s not queued, due again next pass: %s",
                        user, error)
            await asyncio.to_thread(self.digests.unclaim, user, now, previous)
            return 0
        except asyncio.CancelledError:  # stopping mid-way: the digest is due again
            await asyncio.to_thread(self.digests.unclaim, user, now, previous)
            raise
        log.info("%s: quarantine digest to=<%s> messages=%d", queue_id, user,
                 len(entries) + more)
        return 1

    def message(self, user: str, entries: Sequence[DigestEntry], more: int,
                now: float) -> bytes:
        """The digest for *user*, its links signed to expire ``link_days`` from *now*."""
        secret = self.digests.secret()
        mode = self.user_release.get(user.rpartition("@")[2], DEFAULT_USER_RELEASE)
        expires = int(now + self.link_seconds)
        links = {entry.queue_id: {action: f"{self.public_url}/digest/" + sign_link(
                     secret, DigestLink(action, entry.queue_id, user, expires))
                  for action in link_actions(entry, mode)} for entry in entries}
        return build_digest(user, entries, links, self.zone, now, more,
                            f"{self.public_url}/quarantine")


# -- the pages -----------------------------------------------------------------------------

PROBLEMS = {  # (status, heading, text): nothing about why a check failed inside
    "invalid": (400, "This link does not work",
                "It may have been cut or changed on the way. Open the summary email again, "
                "or sign in to the webmail."),
    "expired": (410, "This link has expired",
                "Links in the quarantine summary last a few days. Sign in to the webmail "
                "to see your quarantine."),
    "used": (410, "This link was already used",
             "Each link works once. Sign in to the webmail to see your quarantine."),
    "not-allowed": (403, "This link can no longer be used",
                    "Sign in to the webmail, or ask your administrator."),
    "gone": (410, "This message is no longer in your quarantine",
             "It was released, deleted or removed meanwhile."),
}


def digest_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """GET: what the link will do, and one button. POST: do it, once."""
    site = site_of(request)
    token = request.path_params["token"]
    now = site.clock()
    digests = DigestStore(site.store)
    try:
        link = verify_link(digests.secret(), token, now)
    except LinkError as error:
        return _problem(site, error.kind)
    user = Accounts(site.store).get_user(link.user)
    if user is None or user.disabled:
        return _problem(site, "not-allowed")
    if digests.token_used(token_hash(token)):
        return _problem(site, "used")
    item = site.mailbox.item(link.user, link.queue_id)
    if item is None or (link.action != "allow" and (item.state != "quarantined"
                                                    or item.trashed)):
        return _problem(site, "gone")
    if link.action == "allow" and not item.sender:
        return _problem(site, "gone")
    if form is None:
        return _confirm(site, request, session, link, item)
    if not digests.use_token(token_hash(token), link.expires_at, now):
        return _problem(site, "used")
    try:
        heading, text = _do(site, link, item, token, digests, now)
    except Exception:
        digests.forget_token(token_hash(token))  # nothing was done: the link still works
        raise
    return site.page("digest.html", None, heading=heading, message=text, button="",
                     csrf="")


def _confirm(site: Site, request: Request, session: WebSession | None, link: DigestLink,
             item: MailboxItem) -> Response:
    from_text, subject = _headers(site.store, item)
    sender = from_text or item.sender
    subject = subject or "(no subject)"
    heading, text, button = {
        "release": ("Release this message?",
                    f"“{subject}” from {sender} will be delivered to your mail server.",
                    "Release"),
        "delete": ("Delete this message?",
                   f"“{subject}” from {sender} will be moved to your Trash.", "Delete"),
        "allow": ("Always allow this sender?",
                  f"Mail from {item.sender} will no longer be held as spam for you.",
                  "Always allow"),
    }[link.action]
    csrf = session.csrf_token if session is not None else site.sessions.login_token(request)
    response = site.page("digest.html", None, heading=heading, message=text, button=button,
                         csrf=csrf)
    if session is None:
        site.sessions.set_login_cookie(request, response, csrf)
    return response


def _do(site: Site, link: DigestLink, item: MailboxItem, token: str, digests: DigestStore,
        now: float) -> tuple[str, str]:
    if link.action == "delete":
        outcome = site.mailbox.trash(link.user, link.queue_id, now)
        log.info("%s: digest link: deleted by %s: %s", link.queue_id, link.user,
                 "trashed" if outcome.trashed else "nothing to do")
        if not outcome.trashed:
            return "Nothing to delete", "It is no longer in your quarantine."
        return "Deleted", "The message is in your Trash. It will not be delivered."
    if link.action == "allow":
        SenderRules(site.store).add("user", link.user, item.sender, "allow",
                                    f"{link.user} (digest link)", now)
        log.info("%s: digest link: %s allowed sender=<%s>", link.queue_id, link.user,
                 item.sender)
        return ("Sender allowed", f"Mail from {item.sender} will no longer be held as spam "
                                  "for you. This message stays where it is: release it to "
                                  "get it.")
    domain = link.user.rpartition("@")[2]
    release = functools.partial(
        release_quarantined, Queue(site.store, site.settings.node), link.queue_id,
        site.scanning, actor=f"{link.user} (digest link)", addresses=(link.user,),
        user_release=site.user_release.get(domain, DEFAULT_USER_RELEASE))
    result = anyio.from_thread.run(release)  # the scanners live on the server's loop
    log.info("%s: digest link: release by %s: %s%s", link.queue_id, link.user,
             result.outcome.value, f" ({result.reason})" if result.reason else "")
    if result.outcome is ReleaseOutcome.SCAN_FAILED:
        digests.forget_token(token_hash(token))
        return ("Not released yet", "Scanning is unavailable. Try the link again in a few "
                                    "minutes.")
    return {
        ReleaseOutcome.RELEASED: ("Released", "It will be delivered to your mail server."),
        ReleaseOutcome.NOT_QUARANTINED: ("Nothing to release",
                                         "It is no longer in your quarantine."),
        ReleaseOutcome.NOT_ALLOWED: ("Not released", "Only your administrator can release "
                                                     "this message: ask them."),
        ReleaseOutcome.INFECTED: ("Not released", "It still looks dangerous: ask your "
                                                  "administrator."),
    }[result.outcome]


def _problem(site: Site, kind: str) -> Response:
    status, heading, text = PROBLEMS[kind]
    return site.page("digest.html", None, status=status, heading=heading, message=text,
                     button="", csrf="")


def optin_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """POST /quarantine/digest: the Quarantine page's "daily summary" checkbox."""
    assert session is not None and form is not None
    site = site_of(request)
    wanted = form.get("digest") == "on"
    site.accounts.set_digest(session.email, wanted)
    return RedirectResponse(f"/quarantine?notice=digest-{'on' if wanted else 'off'}",
                            status_code=303)
