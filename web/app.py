"""``build_app()``: the page, the API and the Mini App's routes (:mod:`web.answers`) on one FastAPI application.

FastAPI because it is a well-kept ASGI framework that gives the OpenAPI schema from the routes' own types
(``/api/v1/openapi.json``) and pydantic, which detbot uses already; uvicorn serves it (:mod:`web.main`).
The routes stay thin: a submit's checks are :mod:`web.submit`, the queue is :mod:`web.jobs`, who calls is
:mod:`web.context` and :mod:`web.access`, the checks before any route are :mod:`web.guard`, the words are
:mod:`web.texts`. Every refusal is a 4xx/5xx with ``{"error": {"code", "message"}}`` and one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from bot import replies
from bot.classes import PublishedClasses
from bot.i18n import LANGUAGES
from bot.limits import Limits
from detector.names import ClassNames
from jobs import keys
from jobs.exceptions import QueueUnavailableError
from web import schemas
from web.access import ApiKeys
from web.answers import add_answer_routes
from web.context import CallerDep, Services, TextsDep, WebError, unavailable
from web.guard import Guard, error_response
from web.jobs import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_QUEUED,
    Completions,
    JobState,
    WebQueue,
    result_document,
)
from web.mini_app import MiniApp
from web.settings import MAX_IMAGE_BYTES, WebSettings
from web.submit import DETECT_BODY, accept, too_big
from web.texts import Texts, page_catalog

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
API = "/api/v1"
# Every route but the upload reads a few bytes at most: their bodies are capped far lower.
SMALL_BODY = 64 * 1024
# Longest wait a status request may ask for (seconds): below common proxies' 30-60 s idle timeouts.
MAX_WAIT = 25.0
# Uploads read and checked at once (each up to 20 MB in memory); the others wait their turn with their body
# still unread, so a crowd of big uploads costs this many pictures of memory, not one per connection.
UPLOADS_AT_ONCE = 8
JOB_ID = r"^[0-9a-f]{32}$"
# Telegram's web clients show a Mini App in a frame of theirs (its apps use a webview of their own).
TELEGRAM_WEB_CLIENTS = ("https://web.telegram.org",)

JobIdPath = Annotated[str, PathParam(pattern=JOB_ID, description="The id /api/v1/detect answered with.")]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorModel} for code in (400, 401, 403, 404, 413, 415, 422, 429, 503)
}


# -- answers -----------------------------------------------------------------------------------------------

def job_document(svc: Services, job_id: str, state: JobState, tr: Texts) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": job_id, "status": state.status}
    if state.status == STATUS_QUEUED:
        doc["position"] = state.position
    elif state.status == STATUS_DONE:
        doc.update(result_document(state, svc.names, LANGUAGES))
        doc["image_url"] = f"{API}/jobs/{job_id}/image"
        doc["expires_in"] = svc.queue.ttl(job_id)
    elif state.status == STATUS_FAILED and state.completion is not None:
        c = state.completion
        doc["error"] = {"code": c.code, "message": replies.completion_error(tr.bot, c.code, c.details, svc.names)}
    return doc


async def job_state(svc: Services, job_id: str, owner: str, tr: Texts) -> JobState:
    try:
        state = await asyncio.to_thread(svc.queue.state, job_id, owner)
    except (QueueUnavailableError, RedisError) as exc:
        raise unavailable(tr) from exc
    if state is None:
        raise WebError(404, "not_found", tr("error.not_found"))
    return state


# -- the application ---------------------------------------------------------------------------------------

def build_app(settings: WebSettings, redis: Redis, async_redis: AsyncRedis, mini_app: MiniApp | None = None,
              names: ClassNames | None = None) -> FastAPI:
    """The page, the API and their checks; the completion reader runs for the application's lifetime.
    ``mini_app``: the bot's Mini App (its answers' routes), when this web has the bot's token."""
    names = names or ClassNames()
    queue = WebQueue(redis, settings.served(), settings.max_queued_jobs, settings.answer_ttl)
    svc = Services(
        settings=settings,
        queue=queue,
        completions=Completions(async_redis, [keys.web_events(q) for q in settings.served().values()],
                                settings.answer_ttl),
        keys=ApiKeys(settings.keys()),
        # Without keys there is no key to count: only the address's limit applies.
        limits=Limits(settings.web_rate_limit_key if settings.keys() else 0, settings.web_rate_limit_address),
        names=names,
        classes={m: PublishedClasses(c.class_names, names.aliases()) for m, c in queue.clients.items()},
        mini_app=mini_app,
        uploads=asyncio.Semaphore(UPLOADS_AT_ONCE),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.loop = asyncio.get_running_loop()
        reader = asyncio.create_task(svc.completions.run(), name="completions")
        try:
            yield
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    app = FastAPI(
        title="detbot", version="1", lifespan=lifespan, openapi_url=f"{API}/openapi.json", docs_url=None,
        redoc_url=None,
        description="Object detection on detbot's queue: POST an image, read the job until it is done. "
        "Every box is kept down to the detection floor, so a client re-thresholds without another request.",
    )
    app.state.services = svc
    install_error_handlers(app, svc)
    add_routes(app, svc)
    add_answer_routes(app, svc)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(Guard, texts_of=svc.texts_of, allowed_origins=settings.web_cors_origins,
                       framed_by=TELEGRAM_WEB_CLIENTS if mini_app is not None else (),
                       request_limit=settings.web_request_limit, body_cap=SMALL_BODY,
                       body_caps={f"{API}/detect": settings.max_body}, too_big=too_big)
    if settings.web_cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.web_cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Idempotency-Key", "Authorization"], max_age=600)
    return app


def install_error_handlers(app: FastAPI, svc: Services) -> None:
    @app.exception_handler(WebError)
    async def web_error(_request: Request, exc: WebError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        tr = svc.texts_of(request.scope)
        if exc.status_code == 413:  # the Guard's cap, passed while the body streamed
            log.info("refused %s from %s: body over the cap", request.url.path, request.client and request.client.host)
            return error_response(413, "too_big", too_big(tr))
        if exc.status_code == 405:
            return error_response(405, "method_not_allowed", tr("error.method_not_allowed"))
        return error_response(exc.status_code, "not_found", tr("error.not_found_page"))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        tr = svc.texts_of(request.scope)
        where = [str(part) for error in exc.errors() for part in error.get("loc", ())]
        if "path" in where:  # an id that cannot exist (not hex, a path in it): as if unknown
            return error_response(404, "not_found", tr("error.not_found"))
        field = next((p for p in reversed(where) if p not in ("query", "header", "body")), "?")
        return error_response(400, "bad_field", tr("error.bad_field", field=field[:40]))


def add_routes(app: FastAPI, svc: Services) -> None:
    settings = svc.settings

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/i18n/{language}.json", include_in_schema=False)
    async def catalog(language: str, tr: TextsDep) -> JSONResponse:
        if language not in LANGUAGES:
            raise WebError(404, "not_found", tr("error.not_found_page"))
        return JSONResponse(page_catalog(language), headers={"cache-control": "public, max-age=300"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        try:
            await asyncio.to_thread(svc.queue.redis.ping)
        except RedisError:
            return JSONResponse({"ok": False, "redis": "unreachable"}, status_code=503)
        return JSONResponse({"ok": True, "waiting": svc.completions.waiting})

    @app.get(f"{API}/info", response_model=schemas.InfoModel, summary="What this server takes")
    async def info() -> dict[str, Any]:
        def models() -> list[dict[str, Any]]:
            out = []
            for name, client in svc.queue.clients.items():
                try:
                    classes, published = client.class_names(), client.model_info()
                except QueueUnavailableError:
                    classes, published = None, None
                out.append({"name": name, "classes": classes, "task": published.task if published else None})
            return out

        return {
            "keys_required": svc.keys.required, "max_bytes": MAX_IMAGE_BYTES, "max_pixels": settings.max_pixels,
            "default_confidence": settings.default_confidence, "result_ttl": settings.answer_ttl,
            "languages": list(LANGUAGES), "models": await asyncio.to_thread(models),
        }

    @app.post(f"{API}/detect", status_code=202, response_model=schemas.Accepted, responses=ERRORS,
              openapi_extra=DETECT_BODY, summary="Queue an image for detection")
    async def detect(request: Request, response: Response, who: CallerDep, tr: TextsDep,
                     idempotency_key: Annotated[str | None, Header(description="Retries with the same value get the "
                                                                   "first request's job, never a second one.")] = None,
                     ) -> dict[str, Any]:
        job_id = await accept(request, svc, who, tr, idempotency_key)
        response.headers["location"] = f"{API}/jobs/{job_id}"
        return {"id": job_id, "status": STATUS_QUEUED, "status_url": f"{API}/jobs/{job_id}"}

    @app.get(f"{API}/jobs/{{job_id}}", response_model=schemas.JobModel, response_model_exclude_unset=True,
             responses=ERRORS, summary="A job's state, and its result once done")
    async def job(job_id: JobIdPath, who: CallerDep, tr: TextsDep,
                  wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the job to "
                                               "finish before answering (long polling).")] = 0,
                  ) -> dict[str, Any]:
        async with svc.completions.waiter(job_id) as finished:
            state = await job_state(svc, job_id, who.owner, tr)
            if wait and not state.finished:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), wait)
                state = await job_state(svc, job_id, who.owner, tr)
        return job_document(svc, job_id, state, tr)

    @app.get(f"{API}/jobs/{{job_id}}/image", responses={200: {"content": {"image/jpeg": {}}}, **ERRORS},
             response_class=Response, summary="The annotated image of a finished job")
    async def job_image(job_id: JobIdPath, who: CallerDep, tr: TextsDep) -> Response:
        try:
            data = await asyncio.to_thread(svc.queue.annotated, job_id, who.owner)
        except (QueueUnavailableError, RedisError) as exc:
            raise unavailable(tr) from exc
        if data is None:
            raise WebError(404, "not_found", tr("error.not_found"))
        return Response(data, media_type="image/jpeg",
                        headers={"content-disposition": f'inline; filename="detbot-{job_id[:8]}.jpg"'})
