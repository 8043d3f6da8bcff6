"""The Mini App's routes: a chat's answer, its clean photo, and "apply" (:mod:`web.mini_app` does the work).

Every route needs ``Authorization: tma <initData>`` (401 without a valid one, also for an answer that does
not exist: nothing is told to someone unsigned) and exists only when the web has the bot's token (404
otherwise). Whoever may open the answer (:func:`bot.mini_app.may_view`) sees it; whether they may *apply*
is the bot's verdict, as for a press of its buttons.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from PIL import Image
from redis.exceptions import RedisError

from bot import mini_app
from bot.answers import Answer
from bot.i18n import LANGUAGES
from bot.inbox import InboxFull
from detector.errors import DetectorError
from detector.image import read_header
from detector.params import DetectParams, class_key
from web import schemas
from web.context import Services, TextsDep, WebError, unavailable
from web.initdata import InitDataError, WebAppUser
from web.jobs import boxes_document
from web.texts import Texts

log = logging.getLogger("web.app")

ANSWERS = "/api/v1/answers"
ANSWER_ID = r"^[A-Za-z0-9_-]{8,32}$"
TMA_SCHEME = "tma "
# A photo index: 0 for a single photo, 1-10 in an album.
MAX_INDEX = 10
# "Too fast" asks the page to wait this long (seconds): the bot's press limit is per 10 s.
TOO_FAST_RETRY = 10
# The threshold may sit this far below the floor (rounding of a slider's value) and still be the floor.
FLOOR_EPSILON = 1e-6

AnswerIdPath = Annotated[str, PathParam(pattern=ANSWER_ID, description="The answer's id (the 🎚 button's).")]
AuthorizationHeader = Annotated[str | None, Header(description="`tma <initData>`, as Telegram gave it to the page.")]
RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorModel} for code in (400, 401, 403, 404, 429, 502, 503)
}


def refused(tr: Texts, verdict: str) -> WebError:
    """The bot's verdict on a request, when it is a refusal, as the API's error."""
    if verdict == mini_app.GONE:
        return WebError(404, "not_found", tr("error.answer_expired"))
    if verdict == mini_app.NOT_YOURS:
        return WebError(403, "not_yours", tr("error.not_yours_apply"))
    if verdict == mini_app.TOO_FAST:
        return WebError(429, "rate_limited", tr("error.too_fast"), {"retry-after": str(TOO_FAST_RETRY)})
    if verdict == mini_app.FAILED:
        return WebError(502, "edit_failed", tr("error.edit_failed"))
    if verdict == mini_app.BAD:
        return WebError(400, "bad_field", tr("error.bad_field", field="view"))
    return unavailable(tr)


async def opened(svc: Services, tr: Texts, answer_id: str, authorization: str | None) -> tuple[WebAppUser, Answer]:
    """Who opened the page (401 for anything but valid initData) and the answer, if they may see it."""
    app = svc.mini_app
    if app is None:
        raise WebError(404, "not_found", tr("error.not_found_page"))
    if not authorization or not authorization.startswith(TMA_SCHEME):
        raise WebError(401, "init_data", tr("error.init_data"), {"www-authenticate": "tma"})
    try:
        user = app.user(authorization[len(TMA_SCHEME):])
    except InitDataError as exc:
        log.info("refused answer %s: initData %s", answer_id, exc)
        raise WebError(401, "init_data", tr("error.init_data"), {"www-authenticate": "tma"}) from None
    try:
        found = await app.answer(answer_id)
    except RedisError as exc:
        raise unavailable(tr) from exc
    if found is None:
        raise WebError(404, "not_found", tr("error.answer_expired"))
    if not mini_app.may_view(found, user.id):
        log.info("refused answer %s: user %s is not the person of its private chat", answer_id, user.id)
        raise WebError(403, "not_yours", tr("error.not_yours"))
    return user, found


async def ask(svc: Services, tr: Texts, kind: str, answer_id: str, answer: Answer, user: WebAppUser,
              **fields: Any) -> tuple[str, bytes] | None:
    assert svc.mini_app is not None
    try:
        return await svc.mini_app.ask(kind, answer_id, answer, user, **fields)
    except (InboxFull, RedisError) as exc:
        log.warning("Mini App %s request on answer %s not made: %s", kind, answer_id, type(exc).__name__)
        raise unavailable(tr) from exc


def answer_document(svc: Services, answer_id: str, answer: Answer, user: WebAppUser) -> dict[str, Any]:
    return {
        "id": answer_id, "language": answer.language, "floor": answer.floor, "start": answer.start,
        "view": answer.view or answer.start, "private": answer.private, "asker": user.id == answer.asker,
        "photos": [{"index": p.index, "width": int(p.base.get("width", 0)), "height": int(p.base.get("height", 0)),
                    "photo_url": f"{ANSWERS}/{answer_id}/photos/{p.index}",
                    **boxes_document(p.candidates, svc.names, LANGUAGES)} for p in answer.photos],
    }


def asked_view(body: schemas.ViewModel, answer: Answer, tr: Texts) -> DetectParams:
    """The view to apply, checked against what the answer can show: 400 for anything else."""
    try:
        view = DetectParams(body.confidence, body.classes, tuple(body.class_confidence.items()))
    except DetectorError:
        raise WebError(400, "bad_field", tr("error.bad_field", field="view")) from None
    if view.min_confidence < answer.floor - FLOOR_EPSILON:
        raise WebError(400, "bad_field", tr("error.below_floor", floor=answer.floor))
    present = {class_key(b.class_name) for p in answer.photos for b in p.boxes()}
    unknown = sorted({*(view.classes or ()), *(c for c, _ in view.class_confidence)} - present)
    if unknown:
        raise WebError(400, "unknown_class", tr("error.no_such_class", name=unknown[0]))
    return view


def image_type(data: bytes) -> str:
    """The MIME type of a clean photo (Telegram's are JPEG; an image sent as a file may be another)."""
    header = read_header(data)
    return Image.MIME.get(header.format or "", "application/octet-stream")


def add_answer_routes(app: FastAPI, svc: Services) -> None:
    @app.get(f"{ANSWERS}/{{answer_id}}", response_model=schemas.AnswerModel, responses=RESPONSES,
             summary="A chat's answer, for its Mini App (Authorization: tma <initData>)")
    async def answer(answer_id: AnswerIdPath, tr: TextsDep, authorization: AuthorizationHeader = None,
                     ) -> dict[str, Any]:
        user, found = await opened(svc, tr, answer_id, authorization)
        return answer_document(svc, answer_id, found, user)

    @app.get(f"{ANSWERS}/{{answer_id}}/photos/{{index}}", response_class=Response, summary="An answer's clean photo",
             responses={200: {"content": {"image/jpeg": {}}}, **RESPONSES})
    async def photo(answer_id: AnswerIdPath, index: Annotated[int, PathParam(ge=0, le=MAX_INDEX)], tr: TextsDep,
                    authorization: AuthorizationHeader = None) -> Response:
        user, found = await opened(svc, tr, answer_id, authorization)
        if all(p.index != index for p in found.photos):
            raise WebError(404, "not_found", tr("error.not_found_page"))
        verdict = await ask(svc, tr, mini_app.KIND_PHOTO, answer_id, found, user, index=index)
        if verdict is None:
            raise unavailable(tr)
        if verdict[0] != mini_app.SENT:
            raise refused(tr, verdict[0])
        try:
            media_type = await asyncio.to_thread(image_type, verdict[1])
        except DetectorError as exc:
            raise unavailable(tr) from exc
        return Response(verdict[1], media_type=media_type, headers={"cache-control": "private, max-age=3600"})

    @app.post(f"{ANSWERS}/{{answer_id}}/view", response_model=schemas.AppliedModel, responses=RESPONSES,
              summary="Apply a view to the answer in its chat (as its buttons do)")
    async def view(answer_id: AnswerIdPath, body: schemas.ViewModel, tr: TextsDep,
                   authorization: AuthorizationHeader = None) -> JSONResponse:
        user, found = await opened(svc, tr, answer_id, authorization)
        wanted = asked_view(body, found, tr)
        verdict = await ask(svc, tr, mini_app.KIND_VIEW, answer_id, found, user, view=wanted.to_dict())
        if verdict is None:  # in the bot's inbox: applied once the bot reaches it
            return JSONResponse({"status": "sent", "view": wanted.to_dict()}, status_code=202)
        if verdict[0] not in (mini_app.APPLIED, mini_app.UNCHANGED):
            raise refused(tr, verdict[0])
        return JSONResponse({"status": verdict[0], "view": wanted.to_dict()})

