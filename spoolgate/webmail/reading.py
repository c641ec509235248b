"""Reading one message: the reader page, the sandboxed HTML frame, source, attachments, cid.

Owns how a stored message reaches the browser. Everything comes from the one parse
(:func:`spoolgate.mime.parse.parse_message`). HTML is never part of our page: the page
holds an iframe sandboxed without scripts and without same-origin, whose document (made
safe by :mod:`spoolgate.webmail.render`) comes from its own endpoint with its own CSP;
remote content stays blocked unless the user asks for it for this message. Attachments
are always downloads (RFC 6266 Content-Disposition, nosniff, a sandbox CSP); the cid
endpoint serves only raster images, as images (to the frame by signed URL). Another
user's queue ID is a 404.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote

from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from spoolgate.mime.parse import ParsedMessage, Part, parse_message
from spoolgate.store.accounts import WebSession
from spoolgate.webmail import feedback, presenting, render
from spoolgate.webmail.mailbox import owned
from spoolgate.webmail.security import DOWNLOAD_CSP
from spoolgate.webmail.sessions import signature
from spoolgate.webmail.site import Site, site_of

INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp",
                                "image/bmp", "image/avif", "image/x-icon"})
"""Raster types only: an SVG served at our origin could run script when opened."""
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Attachment:
    index: int
    name: str
    content_type: str
    size: str


def _message(site: Site, session: WebSession, queue_id: str) -> tuple[object, ParsedMessage]:
    item = owned(site, session, queue_id)
    data = site.store.message_data(queue_id)
    if data is None:
        raise HTTPException(404, "No such message")
    return item, parse_message(data)


def read_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    assert session is not None
    site = site_of(request)
    queue_id = request.path_params["queue_id"]
    item, parsed = _message(site, session, queue_id)
    if not item.seen:
        site.mailbox.mark_seen(session.email, queue_id, site.clock())
    remote = request.query_params.get("remote") == "1"
    html_parts = parsed.html_bodies()
    blocked = 0
    if html_parts and not remote:
        blocked = render.render_html(html_parts[0].text or "",
                                     cid_url=_cid_url(session, queue_id, parsed),
                                     allow_remote=False).remote_blocked
    text = None if html_parts else Markup(render.render_text(
        parsed.text_body()[:site.settings.max_inline_text]))
    reasons = site.mailbox.quarantine_reasons([queue_id]) if item.state == "quarantined" else {}
    badge, status = presenting.status(item, site.clock(), site.zone, reasons.get(queue_id))
    return site.page(
        "message.html", session, folder=_folder(item), item=item, parsed=parsed,
        subject=parsed.subject or "(no subject)", text=text, has_html=bool(html_parts),
        remote=remote, blocked=blocked, badge=badge, status_text=status,
        all_headers=parsed.headers if request.query_params.get("headers") == "all" else None,
        received=presenting.long_time(item.queued_at, site.zone),
        attachments=_attachments(parsed),
        **feedback.reader_context(site, session, item, reasons.get(queue_id),
                                  request.query_params))


def _folder(item) -> str:
    if item.trashed:
        return "trash"
    return "quarantine" if item.state == "quarantined" else "inbox"


def _attachments(parsed: ParsedMessage) -> list[Attachment]:
    attached = {id(p) for p in parsed.attachments()}
    return [Attachment(n, part.filename or "(unnamed)", _safe_type(part.content_type),
                       presenting.human_size(part.size))
            for n, part in enumerate(parsed.parts) if id(part) in attached]


def frame_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """The HTML body as its own document, for the sandboxed iframe."""
    assert session is not None
    site = site_of(request)
    queue_id = request.path_params["queue_id"]
    _, parsed = _message(site, session, queue_id)
    html_parts = parsed.html_bodies()
    if not html_parts:
        raise HTTPException(404, "This message has no HTML part")
    remote = request.query_params.get("remote") == "1"
    rendered = render.render_html(html_parts[0].text or "",
                                  cid_url=_cid_url(session, queue_id, parsed), allow_remote=remote)
    headers = dict(render.FRAME_HEADERS)
    headers["Content-Security-Policy"] = render.FRAME_CSP_REMOTE if remote else render.FRAME_CSP
    return Response(rendered.document, media_type="text/html; charset=utf-8", headers=headers)


def _cid_url(session: WebSession, queue_id: str, parsed: ParsedMessage):
    """cid: -> our URL of that inline image, signed: the sandboxed frame is an opaque
    origin, so the browser sends no (SameSite) session cookie with the image request."""
    images = {_bare_cid(p.content_id) for p in parsed.parts
              if p.content_id and p.content_type in INLINE_IMAGE_TYPES}

    def cid_url(cid: str) -> str | None:
        cid = _bare_cid(cid)
        if cid not in images:
            return None
        sig = signature(session, f"{queue_id}\n{cid}")
        return f"/m/{queue_id}/cid/{quote(cid, safe='')}?u={session.id}&s={sig}"

    return cid_url


def _bare_cid(value: str | None) -> str:
    return (value or "").strip().removeprefix("cid:").strip("<>").strip()


def source_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """The stored bytes as text/plain (a download with ?download=1)."""
    assert session is not None
    site = site_of(request)
    queue_id = request.path_params["queue_id"]
    owned(site, session, queue_id)
    data = site.store.message_data(queue_id) or b""
    inline = request.query_params.get("download") != "1"
    return Response(data, media_type="text/plain; charset=utf-8", headers={
        "Content-Security-Policy": DOWNLOAD_CSP,
        "Content-Disposition": render.content_disposition(f"{queue_id}.eml", inline=inline)})


def attachment_view(request: Request, form: FormData | None,
                    session: WebSession | None) -> Response:
    """One attachment, always as a download."""
    assert session is not None
    site = site_of(request)
    _, parsed = _message(site, session, request.path_params["queue_id"])
    part = _part(parsed, request.path_params["index"])
    if part is None or all(part is not p for p in parsed.attachments()):
        raise HTTPException(404, "No such attachment")
    return Response(part.payload, media_type=_safe_type(part.content_type), headers={
        "Content-Security-Policy": DOWNLOAD_CSP,
        "Content-Disposition": render.content_disposition(part.filename)})


def cid_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """An inline image named by Content-ID, re-served as an image and nothing else; a
    signed-out request needs the signature :func:`_cid_url` gave."""
    site = site_of(request)
    queue_id = request.path_params["queue_id"]
    cid = _bare_cid(request.path_params["cid"])
    session = session or _signed_session(site, request, f"{queue_id}\n{cid}")
    _, parsed = _message(site, session, queue_id)
    for part in parsed.parts:
        if part.content_id and _bare_cid(part.content_id) == cid:
            if part.content_type not in INLINE_IMAGE_TYPES:
                break
            return Response(part.payload, media_type=part.content_type,
                            headers={"Content-Security-Policy": DOWNLOAD_CSP,
                                     "Cache-Control": "private, max-age=3600"})
    raise HTTPException(404, "No such image")


def _signed_session(site: Site, request: Request, text: str) -> WebSession:
    session_id, sig = request.query_params.get("u", ""), request.query_params.get("s", "")
    session = site.sessions.load_id(session_id) if session_id else None
    if session is None or not hmac.compare_digest(signature(session, text), sig):
        raise HTTPException(404, "No such image")
    return session


def _part(parsed: ParsedMessage, index: str) -> Part | None:
    if not index.isdigit() or int(index) >= len(parsed.parts):
        return None
    return parsed.parts[int(index)]


def _safe_type(content_type: str) -> str:
    value = content_type.strip().lower()
    return value if _MIME_TYPE.match(value) else "application/octet-stream"
