"""Security headers on every webmail response (an ASGI middleware).

Owns the page policy: a strict CSP (no inline script or style, nothing from elsewhere,
no framing of our pages), nosniff, no referrer, X-Frame-Options DENY. A response that
sets its own Content-Security-Policy (the message frame, downloads) keeps its policy and
frame headers; nosniff and the referrer policy are added to every response whatever it
set. It never fails a response: it only adds headers.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
            "object-src 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Frame-Options": "DENY",
}
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
DOWNLOAD_CSP = "default-src 'none'; sandbox"
"""For bytes from a message served at our origin (attachments, inline images, source)."""


class SecurityHeaders:
    """Adds :data:`PAGE_HEADERS` (unless the response has its own CSP) and :data:`ALWAYS`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    for name, value in PAGE_HEADERS.items():
                        headers[name] = value
                for name, value in ALWAYS.items():
                    headers[name] = value
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
