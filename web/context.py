"""What every route of the web face shares: the services built once, who calls, in which words, and
the one exception a refusal is (``WebError``, turned into ``{"error": {"code", "message"}}``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from starlette.types import Scope

from bot import replies
from bot.classes import PublishedClasses
from bot.limits import Limits
from detector.names import ClassNames
from web.access import ApiKeys, Caller
from web.jobs import Completions, WebQueue
from web.mini_app import MiniApp
from web.settings import WebSettings
from web.texts import Texts, choose_language, texts

log = logging.getLogger("web.app")

# How long "unavailable" asks a client to stay away (seconds): Redis is usually back within that.
UNAVAILABLE_RETRY = 10

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="One of DETBOT_WEB_KEYS; required when the server has keys.")


class WebError(Exception):
    """A refusal: HTTP status, stable code, the sentence for people, extra headers (Retry-After)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message, self.headers = status, code, message, headers


@dataclass
class Services:
    """What the routes share, built once in :func:`build_app`."""

    settings: WebSettings
    queue: WebQueue
    completions: Completions
    keys: ApiKeys
    limits: Limits
    names: ClassNames
    classes: dict[str, PublishedClasses]
    mini_app: MiniApp | None  # the bot's Mini App (None: no token, no Mini App)
    uploads: asyncio.Semaphore
    loop: asyncio.AbstractEventLoop | None = None  # the application's, once it started

    def stop(self) -> None:
        """The server stops: what waits (long polls, a Mini App's verdict) answers now."""
        self.completions.stop()
        if self.mini_app is not None:
            self.mini_app.stop()

    def stop_threadsafe(self) -> None:
        """:meth:`stop` from a signal handler: run on the application's event loop (once it runs)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.stop)

    def texts_of(self, scope: Scope) -> Texts:
        request = Request(scope)
        language = choose_language(request.query_params.get("lang"), request.headers.get("accept-language"),
                                   self.settings.default_language)
        return texts(language)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def request_texts(request: Request) -> Texts:
    return services(request).texts_of(request.scope)


def caller(request: Request, key: Annotated[str | None, Security(api_key_header)] = None) -> Caller:
    """Who calls: a valid key when the server has keys (else 401), and the client's address."""
    svc = services(request)
    address = request.client.host if request.client else ""
    if not svc.keys.required:
        return Caller(-1, "", address)
    tr = svc.texts_of(request.scope)
    if not key:
        log.info("refused %s from %s: no API key", request.url.path, address)
        raise WebError(401, "key_missing", tr("error.key_missing"), {"www-authenticate": "X-API-Key"})
    index = svc.keys.match(key)
    if index is None:
        log.info("refused %s from %s: a wrong API key", request.url.path, address)
        raise WebError(401, "key_wrong", tr("error.key_wrong"), {"www-authenticate": "X-API-Key"})
    return Caller(index, svc.keys.ids[index], address)


def unavailable(tr: Texts) -> WebError:
    """Redis is away: the bot's own "temporarily unavailable", and when to try again."""
    return WebError(503, "unavailable", tr.bot.gettext(replies.UNAVAILABLE), {"retry-after": str(UNAVAILABLE_RETRY)})


TextsDep = Annotated[Texts, Depends(request_texts)]
CallerDep = Annotated[Caller, Depends(caller)]
