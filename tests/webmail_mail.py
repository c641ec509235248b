"""Realistic messages for the webmail tests, built with the stdlib email package, and a
way to put them in a store the way intake would."""

from __future__ import annotations

import time
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from spoolgate.mail.envelope import ClientInfo, Envelope, IncomingMessage, Recipient
from spoolgate.mail.queueid import new_queue_id
from spoolgate.mime.parse import header_summary
from spoolgate.store.store import Store

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def text_message(to: str, subject: str = "Quarterly numbers", body: str = "Hello,\n\nsee you.\n",
                 sender: str = "Bob Builder <bob@partner.test>") -> bytes:
    msg = _base(to, subject, sender)
    msg.set_content(body)
    return bytes(msg)


def html_message(to: str, subject: str = "Newsletter") -> bytes:
    msg = _base(to, subject, "News <news@letters.test>")
    msg.set_content("Plain version of the newsletter.")
    msg.add_alternative(
        '<html><body><h1 id="headline">Big news inside</h1>'
        '<p>Look at <img src="cid:logo@x" alt="logo"> and '
        '<img id="tracker" src="http://tracker.invalid/pixel.png" alt="remote"></p>'
        '<script>document.title="pwned"</script></body></html>', subtype="html")
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@x>")
    return bytes(msg)


def attachment_message(to: str, payload: bytes = b"%PDF-1.4 fake report\n",
                       filename: str = "report Q3.pdf") -> bytes:
    msg = _base(to, "Report attached", "Carol <carol@partner.test>")
    msg.set_content("The report is attached.")
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename=filename)
    msg.add_attachment(b"<script>alert(1)</script>", maintype="text", subtype="html",
                       filename="page.html", cid="<page@x>")
    return bytes(msg)


def _base(to: str, subject: str, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain="partner.test")
    return msg


def deliver(store: Store, data: bytes, *recipients: str, at: float | None = None,
            quarantined: bool = False) -> str:
    """Commit *data* for *recipients* as intake does; returns the queue ID."""
    at = time.time() if at is None else at
    envelope = Envelope("bob@partner.test", tuple(Recipient(r) for r in recipients),
                        ClientInfo("192.0.2.7", "mx.partner.test"))
    queue_id = new_queue_id(at)
    events = (("accepted", "from=<bob@partner.test>"),)
    if quarantined:
        events += (("scanned", "action=quarantine score=12 symbols=SPAM_WORDS(12)"),)
    subject, message_id = header_summary(data)
    store.commit_incoming([IncomingMessage(queue_id, envelope, data, at, "node-a", events,
                                           quarantined=quarantined, subject=subject,
                                           message_id=message_id)])
    return queue_id
