"""A submit, step by step, in the bot's order, cheapest first: the caller's photos per minute (before a byte
of the body is read), the form (capped while it streams, :mod:`web.guard`), its fields as the bot's parser
reads a caption, the class names against those the model's workers published, the image's header, then
the queue. Each refusal is a :class:`~web.context.WebError` with the bot's own sentence where there is one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re

from redis.exceptions import RedisError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from bot import replies
from bot.classes import model_params
from bot.parsing import UsageError, looks_like_confidence, parse_confidence, parse_detect_args
from detector.errors import ImageError, NotAnImageError, UnsupportedFormatError
from detector.image import read_header
from detector.params import DetectParams
from jobs.exceptions import ChatQueueFullError, QueueFullError, QueueUnavailableError
from web.access import Caller
from web.context import Services, WebError, unavailable
from web.settings import MAX_IMAGE_BYTES
from web.texts import Texts

log = logging.getLogger("web.app")

# A form's text fields (confidence, classes, model) are short; more is not a form of ours.
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 8
# How long "busy" asks a client to stay away (seconds), as the bot's "try again in a minute".
BUSY_RETRY = 60
# How long "too many waiting" asks a client to stay away (seconds): its own photos are being answered.
LANE_RETRY = 30
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Which image errors are "not an image at all" (415); the rest are images we cannot use (422).
UNSUPPORTED_MEDIA = {NotAnImageError.code, UnsupportedFormatError.code}

DETECT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {"type": "string", "format": "binary",
                          "description": "JPEG, PNG, WebP, BMP, TIFF or GIF, at most 20 MB."},
                "confidence": {"type": "string", "description": "0.4, 40% or 0,4; default DETBOT_DEFAULT_CONFIDENCE."},
                "classes": {"type": "string", "description": "Only these classes: person,dog (either language); "
                            "person:0.6 gives a class its own threshold."},
                "model": {"type": "string", "description": "A model /api/v1/info lists; default: the first."},
            },
        }}},
    },
}




async def accept(request: Request, svc: Services, who: Caller, tr: Texts, idempotency_key: str | None) -> str:
    """Every check of a submit, then the submit; returns the job's id or raises a WebError."""
    take_limits(svc, who, tr)
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise WebError(400, "bad_field", tr("error.bad_field", field="Idempotency-Key"))
    async with svc.uploads:
        data, fields = await read_upload(request, tr)
        model = fields.get("model") or svc.settings.queue
        if model not in svc.queue.clients:
            raise WebError(400, "unknown_model", tr("error.unknown_model", model=model[:40],
                                                    models=", ".join(svc.queue.clients)))
        asked = asked_params(fields.get("confidence"), fields.get("classes"), tr)
        params = await resolved_params(svc, model, asked, tr)
        await check_image(svc, data, tr)
        job_id = await submit_job(svc, model, data, params, who, tr, idempotency_key)
    log.info("queued web job %s key=%s from %s: %d bytes conf=%.2f classes=%s model=%s", job_id,
             who.key_id or "-", who.address, len(data), params.threshold, ",".join(params.classes or []) or "all",
             model)
    return job_id


def take_limits(svc: Services, who: Caller, tr: Texts) -> None:
    """The caller's photos per minute (per key, per address), counted before the body is read."""
    refusal = svc.limits.take(*who.buckets)
    if refusal is None:
        return
    retry = max(1, math.ceil(refusal.retry_in))
    key, scope = ("error.rate_key", "key") if refusal.scope == "user" else ("error.rate_address", "address")
    log.info("refused a photo from %s (key %s): over %d a minute per %s", who.address, who.key_id or "-",
             refusal.limit, scope)
    raise WebError(429, "rate_limited", tr(key, n=refusal.limit, seconds=retry), {"retry-after": str(retry)})


def usage_problem(exc: UsageError, tr: Texts) -> WebError:
    """A usage error as the bot words its problem (without the bot's usage lines: they name commands)."""
    return WebError(400, "bad_field", UsageError(exc.problem, None, exc.count, **exc.params).text(tr.bot))


def asked_params(confidence: str | None, classes: str | None, tr: Texts) -> DetectParams:
    """The form's ``confidence`` and ``classes`` as the bot reads them from a caption."""
    try:
        value = parse_confidence(confidence) if confidence and confidence.strip() else None
        filtered = parse_detect_args(classes.replace(",", " ")) if classes and classes.strip() else DetectParams()
    except UsageError as exc:
        raise usage_problem(exc, tr) from None
    if filtered.confidence is not None:  # a number among the class names: not a class
        token = next(t for t in (classes or "").replace(",", " ").split() if looks_like_confidence(t))
        raise usage_problem(UsageError(replies.NOT_A_CLASS, name=token[:20]), tr)
    return DetectParams(value, filtered.classes, filtered.class_confidence)


async def resolved_params(svc: Services, model: str, asked: DetectParams, tr: Texts) -> DetectParams:
    """Class names as the model writes them (either language, multi-word), checked against the names the
    model's workers published; a name no class has is refused with the closest one."""
    try:
        index = await asyncio.to_thread(svc.classes[model].index) if asked.classes or asked.class_confidence \
            else None
    except QueueUnavailableError:
        index = None
    params, unknown = model_params(index, asked, svc.names)
    if unknown:
        first = unknown[0]
        if first.suggestions:
            suggestion = svc.names.display(None, first.suggestions[0], tr.language)
            message = tr("error.no_such_class_suggest", name=first.name, suggestion=suggestion)
        else:
            message = tr("error.no_such_class", name=first.name)
        raise WebError(400, "unknown_class", message)
    return DetectParams.layered(params, DetectParams(svc.settings.default_confidence))


def too_big(tr: Texts) -> str:
    return tr("error.too_big", megabytes=MAX_IMAGE_BYTES // replies.BYTES_PER_MB)


async def read_upload(request: Request, tr: Texts) -> tuple[bytes, dict[str, str]]:
    """The image's bytes and the text fields; the body is capped while it streams (:mod:`web.guard`)."""
    try:
        form = await request.form(max_files=1, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except StarletteHTTPException as exc:
        if exc.status_code == 413:
            raise
        raise WebError(400, "bad_form", tr("error.bad_form")) from None
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise WebError(400, "no_image", tr("error.no_image"))
        data = await upload.read(MAX_IMAGE_BYTES + 1)
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
    finally:
        await form.close()
    if len(data) > MAX_IMAGE_BYTES:
        raise WebError(413, "too_big", too_big(tr))
    return data, fields


async def check_image(svc: Services, data: bytes, tr: Texts) -> None:
    """The bot's header check (format, size, structure), off the event loop."""
    try:
        await asyncio.to_thread(read_header, data, svc.settings.max_pixels)
    except ImageError as exc:
        status = 415 if exc.code in UNSUPPORTED_MEDIA else 422
        raise WebError(status, exc.code, replies.error_reply(tr.bot, exc.code, max_pixels=svc.settings.max_pixels)) \
            from None


async def submit_job(svc: Services, model: str, data: bytes, params: DetectParams, who: Caller, tr: Texts,
                     idempotency_key: str | None) -> str:
    try:
        return await asyncio.to_thread(svc.queue.submit, model, data, params, who, tr.language, idempotency_key)
    except ChatQueueFullError:
        # The caller's lane is a chat of jobs.fair: it may hold at most a chat's share of the queue.
        log.info("refused a photo from %s (key %s): its lane holds as many photos as a chat may", who.address,
                 who.key_id or "-")
        raise WebError(429, "too_many_waiting", tr("error.too_many_waiting"),
                       {"retry-after": str(LANE_RETRY)}) from None
    except QueueFullError:
        log.info("refused a photo from %s: the queue is full", who.address)
        raise WebError(503, "busy", tr.bot.gettext(replies.BUSY), {"retry-after": str(BUSY_RETRY)}) from None
    except (QueueUnavailableError, RedisError) as exc:
        log.warning("refused a photo from %s: Redis unreachable", who.address)
        raise unavailable(tr) from exc
