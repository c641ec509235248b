"""Sending from the webmail: the compose form, reply, reply-all, forward, send and Sent.

Owns the path from the compose form to the durable queue. A message is handed to the
same intake the SMTP sessions use (the ``submit`` callable the gateway gives
:func:`~spoolgate.webmail.app.create_app`, ``Intake.accept``), so it is scanned, gets a
``Received:`` header and is committed durably before the user sees "sent"; delivery then
routes it like any mail (our domains to the company's server, queued while it is down;
others through ``[outbound]``), with retries. The stored message is the copy kept for
reconciliation: Sent lists it, with each recipient's delivery state, for the retention
window. Handlers run in the thread pool (:func:`~spoolgate.webmail.sessions.endpoint`);
the asynchronous submit runs on the server's event loop through
``anyio.from_thread.run``, which is where the intake's group committer lives. A draft
that cannot be sent (bad address, too many recipients, too large, refused by the scan)
comes back as the form with the reason and the typed text kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio.from_thread
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from spoolgate.mail.envelope import ClientInfo, Envelope, Recipient
from spoolgate.mail.reply import SmtpError
from spoolgate.mime.parse import ParsedMessage, parse_message
from spoolgate.store.accounts import WebSession
from spoolgate.store.mailbox import SentItem, SentRecipient
from spoolgate.webmail import presenting
from spoolgate.webmail.compose import (
    ComposeError,
    Draft,
    Upload,
    build_message,
    envelope_recipients,
    forward_draft,
    message_bytes,
    parse_addresses,
    reply_draft,
)
from spoolgate.webmail.mailbox import owned
from spoolgate.webmail.sessions import client_ip
from spoolgate.webmail.site import Site, site_of

Submit = Callable[[Envelope, bytes], Awaitable[str]]
"""Stores one message durably and returns its queue ID, or raises SmtpError."""

log = logging.getLogger("spoolgate.web")
TEXT_FIELDS = ("to", "cc", "bcc", "subject", "body", "in_reply_to", "references",
               "forward_of")
NOT_CONFIGURED = "Sending is not available on this server: it has no mail queue to send through."


def compose_view(request: Request, form: FormData | None,
                 session: WebSession | None) -> Response:
    assert session is not None
    return _form(site_of(request), session, Draft())


def reply_view(reply_all: bool):
    def view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
        assert session is not None
        site = site_of(request)
        parsed = _original(site, session, request.path_params["queue_id"])
        return _form(site, session, reply_draft(parsed, session.email, reply_all=reply_all))

    view.__name__ = "reply_all_view" if reply_all else "reply_view"
    return view


def forward_view(request: Request, form: FormData | None,
                 session: WebSession | None) -> Response:
    assert session is not None
    site = site_of(request)
    queue_id = request.path_params["queue_id"]
    attach = request.query_params.get("attach") == "1"
    return _form(site, session, forward_draft(_original(site, session, queue_id), queue_id,
                                              as_attachment=attach))


def send_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """Send the form's message; on success to Sent, else the form again with the reason."""
    assert session is not None and form is not None
    site = site_of(request)
    draft = _typed(form)
    try:
        draft = dataclasses.replace(draft, uploads=_uploads(form, site))
        queue_id = send(site, session, client_ip(request), draft)
    except ComposeError as error:
        return _form(site, session, draft, error=str(error), status=400)
    log.info("%s: sent from the webmail by <%s>", queue_id, session.email)
    return RedirectResponse("/sent?notice=sent", status_code=303)


def send(site: Site, session: WebSession, ip: str, draft: Draft) -> str:
    """Build and submit *draft* from the user; its queue ID, or :class:`ComposeError`."""
    if site.submit is None:
        raise ComposeError(NOT_CONFIGURED)
    recipients = envelope_recipients(*(parse_addresses(label, getattr(draft, label.lower()))
                                       for label in ("To", "Cc", "Bcc")))
    if not recipients:
        raise ComposeError("Add at least one recipient.")
    if len(recipients) > site.settings.max_recipients:
        raise ComposeError(f"Too many recipients ({len(recipients)}): at most "
                           f"{site.settings.max_recipients} per message.")
    hourly = site.settings.max_recipients_per_hour
    recent = site.mailbox.sent_recipients(session.email, site.clock() - 3600)
    if recent + len(recipients) > hourly:
        log.warning("webmail: <%s> over the hourly limit (%d sent, %d more asked, limit %d)",
                    session.email, recent, len(recipients), hourly)
        raise ComposeError(f"Not sent: you have written to {recent} recipients in the last "
                           f"hour, and at most {hourly} are allowed. Try again later, or ask "
                           "your administrator.")
    original = None
    if draft.forward_of:
        owned(site, session, draft.forward_of)
        original = site.store.message_data(draft.forward_of)
    now = datetime.fromtimestamp(site.clock(), site.zone)
    data = message_bytes(build_message(session.email, draft, hostname=site.settings.hostname,
                                       now=now, original=original))
    if len(data) > site.settings.max_message_size:
        raise ComposeError(f"The message is {presenting.human_size(len(data))}: at most "
                           f"{presenting.human_size(site.settings.max_message_size)} "
                           "can be sent. Attach fewer or smaller files.")
    envelope = Envelope(session.email, tuple(Recipient(a) for a in recipients),
                        ClientInfo(ip, "webmail"),
                        body_type="7BIT" if data.isascii() else "8BITMIME")
    try:
        return anyio.from_thread.run(site.submit, envelope, data)
    except SmtpError as error:
        raise ComposeError(f"Not sent: {error.reply.text}.") from None


def _typed(form: FormData) -> Draft:
    values = {name: form.get(name) for name in TEXT_FIELDS}
    return Draft(**{name: value if isinstance(value, str) else ""
                    for name, value in values.items()})


def _uploads(form: FormData, site: Site) -> tuple[Upload, ...]:
    files = [f for f in form.getlist("attachments") if isinstance(f, UploadFile) and f.filename]
    limit = site.settings.max_attachment_size
    for file in files:
        if file.size is not None and file.size > limit:
            raise ComposeError(f"{file.filename} is {presenting.human_size(file.size)}: each "
                               f"attachment may be at most {presenting.human_size(limit)}. "
                               "Attach your files again.")
    return tuple(Upload(f.filename or "attachment", f.content_type or "", f.file.read())
                 for f in files)


def _original(site: Site, session: WebSession, queue_id: str) -> ParsedMessage:
    owned(site, session, queue_id)
    data = site.store.message_data(queue_id)
    if data is None:
        raise HTTPException(404, "No such message")
    return parse_message(data)


def _form(site: Site, session: WebSession, draft: Draft, error: str | None = None,
          status: int = 200) -> Response:
    return site.page("compose.html", session, status=status, folder="compose", draft=draft,
                     error=error, can_send=site.submit is not None,
                     max_attachment=presenting.human_size(site.settings.max_attachment_size))


def sent_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """The user's sent messages, newest first, with each recipient's delivery state."""
    assert session is not None
    site = site_of(request)
    items = _with_index(site, site.mailbox.sent(session.email, site.settings.page_size))
    now = site.clock()
    rows = [{"item": item, "time": presenting.short_time(item.received_at, now, site.zone),
             "recipients": [(r.address, *recipient_status(r)) for r in item.recipients]}
            for item in items]
    notice = "Sent: it is queued and will be retried until delivered." \
        if request.query_params.get("notice") == "sent" else None
    return site.page("sent.html", session, folder="sent", rows=rows, notice=notice)


def _with_index(site: Site, items: list[SentItem]) -> list[SentItem]:
    fresh = {i.queue_id: presenting.index_entry(parse_message(
        site.store.message_data(i.queue_id) or b"")) for i in items if i.index is None}
    site.mailbox.save_index(fresh)
    return [dataclasses.replace(i, index=fresh[i.queue_id]) if i.queue_id in fresh else i
            for i in items]


def recipient_status(recipient: SentRecipient) -> tuple[str, str]:
    """(badge class, words) for one recipient of a sent message."""
    reply = f": {recipient.last_reply}" if recipient.last_reply else ""
    if recipient.state in ("queued", "delivering"):
        return "waiting", "sending"
    if recipient.state in ("deferred", "held"):
        return "waiting", f"waiting, will retry{reply}"
    if recipient.state == "delivered":
        return "delivered", "delivered"
    if recipient.state == "failed":
        return "stopped", f"not delivered{reply}"
    return "other", recipient.state
