"""Cross-site request forgery: every form post must prove it came from our own page.

Three checks, all required for a ``POST``:

* the form's hidden ``csrf_token`` equals the session's token (compared in
  constant time). Before sign-in there is no session: the sign-in form's token
  is also set in a short-lived ``HttpOnly`` cookie and the two must match
  (double submit);
* when the browser says where the request comes from (``Origin``,
  ``Sec-Fetch-Site``), that is this very origin: another port on the same host
  is another origin and is refused too;
* the session cookie itself is ``SameSite=Strict``, so other sites' pages do
  not send it at all.
"""

from __future__ import annotations

import hmac
import secrets as _random
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

from runner.errors import CsrfError

FIELD: Final = "csrf_token"
SIGN_IN_COOKIE: Final = "runner_sign_in"


def new_token() -> str:
    return _random.token_urlsafe(32)


def refused(why: str) -> CsrfError:
    return CsrfError(
        f"the form was refused: {why}",
        hint="reload the page and submit the form again",
    )


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def check_origin(request: Request) -> None:
    """Refuse a request the browser marks as coming from another origin."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise refused(f"it was sent from another site ({fetch_site})")
    origin = request.headers.get("origin")
    if origin is None:
        return
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    # Hosts only: behind a TLS-terminating proxy the scheme seen here may differ.
    if origin == "null" or parts.netloc.lower() != host.lower():
        raise refused("it was sent from another origin")


def check_form(request: Request, expected: str | None, given: str | None) -> None:
    check_origin(request)
    if not given:
        raise refused("its security token is missing")
    if not tokens_match(expected, given):
        raise refused("its security token does not match this session")
