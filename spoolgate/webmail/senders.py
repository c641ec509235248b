"""A user's own sender rules: always allow or block a sender, and the list to undo them.

Owns the reader's "Always allow sender" / "Block sender" actions and the ``/senders``
page. A rule names the message's envelope sender (the address the gateway checks first)
and applies to the user alone: the scan policy lets it decide a message only when every
recipient of that message agrees (:mod:`spoolgate.intake.scanning`). A bounce (the null
sender) cannot be listed; a queue ID or rule that is not the user's is a 404.
"""

from __future__ import annotations

import logging

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from spoolgate.store.accounts import WebSession
from spoolgate.store.senders import SenderRules
from spoolgate.webmail.mailbox import owned
from spoolgate.webmail.site import site_of

log = logging.getLogger("spoolgate.web")

NOTICES = {
    "removed": "Rule removed.",
}


def rule_view(action: str):
    """POST /m/{queue_id}/allow-sender or /block-sender: a rule for the message's sender."""

    def view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
        assert session is not None
        site = site_of(request)
        item = owned(site, session, request.path_params["queue_id"])
        if not item.sender:
            return RedirectResponse(f"/m/{item.queue_id}?alert=no-sender", status_code=303)
        SenderRules(site.store).add("user", session.email, item.sender, action,
                                    session.email, site.clock())
        log.info("%s: webmail: %s %s sender=<%s>", item.queue_id, session.email,
                 "allowed" if action == "allow" else "blocked", item.sender)
        done = "allowed" if action == "allow" else "blocked"
        return RedirectResponse(f"/m/{item.queue_id}?notice=sender-{done}", status_code=303)

    view.__name__ = f"{action}_sender_view"
    return view


def senders_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    """The user's rules, each with a remove button."""
    assert session is not None
    site = site_of(request)
    rules = SenderRules(site.store).list("user", [session.email])
    return site.page("senders.html", session, folder="senders", rules=rules,
                     notice=NOTICES.get(request.query_params.get("notice", "")))


def remove_view(request: Request, form: FormData | None, session: WebSession | None) -> Response:
    assert session is not None and form is not None
    site = site_of(request)
    try:
        rule_id = int(str(form.get("id", "")))
    except ValueError:
        raise HTTPException(404, "No such rule") from None
    if SenderRules(site.store).remove(rule_id, "user", [session.email]) is None:
        raise HTTPException(404, "No such rule")
    return RedirectResponse("/senders?notice=removed", status_code=303)
