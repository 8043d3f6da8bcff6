"""What every request meets before the app sees it: the checks that need no route (pure ASGI middleware).

- A secret in the URL (``?api_key=``, ``?key=``, ``?token=``...) is refused: URLs land in logs, proxies'
  logs and browser history. Keys go in the ``X-API-Key`` header.
- Cross-origin requests are refused unless their origin is configured (``DETBOT_WEB_CORS_ORIGINS``): CORS
  headers alone would still let another site's page *send* a form to a keyless local server (a "simple"
  request needs no preflight), so any request whose ``Origin`` is neither this site nor a configured one
  gets 403 before it is read.
- API requests per minute per address (``DETBOT_WEB_REQUEST_LIMIT``): floods of any kind, wrong keys tried
  included, get 429 without touching Redis.
- Every response gets headers that keep the page to itself: a Content-Security-Policy with nothing from
  elsewhere, no framing (but by Telegram's web clients when it is the bot's Mini App), no sniffing, no
  referrer; API answers are never cached.

- The request body is capped before it is read: a ``Content-Length`` over the route's cap gets 413 at once,
  and a body sent without one (chunked) is counted as it streams and cut off at the cap. (Starlette's own
  body-limit middleware answers in plain English text; this one answers like every other refusal.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.limits import RateLimiter
from web.access import address_number
from web.texts import Texts

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
# Query parameters that would carry a secret in a URL.
SECRET_PARAMETERS = frozenset({"api_key", "apikey", "key", "token", "access_token", "x-api-key", "auth",
                               "authorization", "password", "init_data", "initdata", "tgwebappdata"})
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
)
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def security_headers(framed_by: tuple[str, ...]) -> dict[str, str]:
    """The headers every response gets. ``framed_by``: the origins that may show the page in a frame (a Mini
    App's web clients); none: no framing at all (X-Frame-Options too, for browsers without CSP 3)."""
    ancestors = " ".join(framed_by) if framed_by else "'none'"
    headers = {"content-security-policy": CONTENT_SECURITY_POLICY.format(ancestors=ancestors), **SECURITY_HEADERS}
    if not framed_by:
        headers["x-frame-options"] = "DENY"
    return headers

class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its cap: an HTTPException, so FastAPI's body
    parsing lets it through unchanged to the app's handler (413, the web's own words)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="body too large")


# How a request's language is chosen (``?lang=``, Accept-Language, the default): given by the app.
LanguageOf = Callable[[Scope], Texts]


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every refusal of the web face has this shape: ``{"error": {"code": ..., "message": ...}}``."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def same_origin(origin: str, headers: Headers) -> bool:
    """Whether ``Origin`` names this site (the Host it was asked for; a proxy may have changed the scheme)."""
    try:
        return bool(origin) and urlsplit(origin).netloc.lower() == headers.get("host", "").lower()
    except ValueError:
        return False


class Guard:
    """The route-free checks and the response headers (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, texts_of: LanguageOf, allowed_origins: tuple[str, ...],
                 request_limit: int, body_cap: int, body_caps: dict[str, int], too_big: Callable[[Texts], str],
                 framed_by: tuple[str, ...] = ()) -> None:
        """``body_cap``: bytes any request may send; ``body_caps``: paths that take more (the upload);
        ``framed_by``: origins that may frame the page (a Mini App's Telegram web clients)."""
        self.app = app
        self.headers = security_headers(framed_by)
        self.texts_of = texts_of
        self.allowed_origins = frozenset(allowed_origins)
        self.requests = RateLimiter(request_limit)
        self.body_cap = body_cap
        self.body_caps = body_caps
        self.too_big = too_big

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._capped(receive, self.body_caps.get(scope["path"], self.body_cap)), send_started)
        except BodyTooLarge:
            if started:
                raise
            await self._body_too_large(scope)(scope, receive, send)

    @staticmethod
    def _capped(receive: Receive, cap: int) -> Receive:
        """``receive`` that raises BodyTooLarge once more than ``cap`` bytes of body came in."""
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge
            return message

        return capped

    def _body_too_large(self, scope: Scope) -> JSONResponse:
        log.info("refused %s from %s: body over the cap", scope["path"], (scope.get("client") or ("", 0))[0])
        return error_response(413, "too_big", self.too_big(self.texts_of(scope)))

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        headers = Headers(scope=scope)
        path: str = scope["path"]
        client = (scope.get("client") or ("", 0))[0]
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.body_caps.get(path, self.body_cap)):
            return self._body_too_large(scope)
        query = {name.lower() for name, _ in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                                         keep_blank_values=True)}
        if query & SECRET_PARAMETERS:
            log.info("refused %s from %s: a secret in the URL", path, client)
            return error_response(400, "secret_in_url", self.texts_of(scope)("error.secret_in_url"))
        origin = headers.get("origin")
        if origin and origin not in self.allowed_origins and not same_origin(origin, headers):
            log.info("refused %s from %s: cross-origin request from %s", path, client, origin[:100])
            return error_response(403, "cross_origin", self.texts_of(scope)("error.cross_origin"))
        if path.startswith(API_PREFIX) and self.requests.limit > 0:
            bucket = address_number(client)
            if self.requests.room(bucket) < 1:
                retry = max(1, math.ceil(self.requests.retry_in(bucket)))
                log.info("refused %s from %s: over %d requests a minute", path, client, self.requests.limit)
                text = self.texts_of(scope)("error.rate_requests", n=self.requests.limit, seconds=retry)
                return error_response(429, "rate_limited", text, {"retry-after": str(retry)})
            self.requests.hit(bucket)
        return None

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        api = scope["path"].startswith(API_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if api:
                    headers["cache-control"] = "no-store"
            await send(message)

        return send_with_headers
