"""What guards the one action that writes: the event buttons.

A page of another site open in the same browser could post a form to the console, and the
browser would send it. So a post must come from the console's own origin (its ``Origin``
header, or its ``Referer`` when a browser sends no ``Origin``) and carry the CSRF token of the
visitor's signed session cookie, which no other site can read. Anything else gets 403.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import abort, request, session

TOKEN_FIELD = "csrf_token"


def csrf_token() -> str:
    """The session's token, made on first use (the templates put it in every event form)."""
    if TOKEN_FIELD not in session:
        session[TOKEN_FIELD] = secrets.token_urlsafe(32)
    return session[TOKEN_FIELD]


def check_post() -> None:
    """Abort with 403 unless this post comes from the console's own pages."""
    if not _same_origin():
        abort(403, description="this post did not come from the console's own page")
    expected, sent = session.get(TOKEN_FIELD), request.form.get(TOKEN_FIELD, "")
    if not expected or not hmac.compare_digest(expected, sent):
        abort(403, description="missing or wrong CSRF token: reload the page and try again")


def _same_origin() -> bool:
    own = urlsplit(request.host_url)
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin:
        return False
    sent = urlsplit(origin)
    return (sent.scheme, sent.netloc) == (own.scheme, own.netloc)
