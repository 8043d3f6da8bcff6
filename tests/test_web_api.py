"""``detbot web``'s HTTP API for real: a real Redis, a real worker on the shapes model, real web processes.

Three web processes share the module's Redis and worker: ``open`` (no keys, loopback, the way a person runs
it on their machine; a second model ``idle`` whose queue no worker serves, so "queued" can be seen),
``keyed`` (API keys, a CORS origin, the bot's token for the Mini App endpoint) and ``strict`` (small limits).
The worker sleeps 300 ms in each job (``DETBOT_TEST_JOB_DELAY_MS``) so a job is seen queued and running.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import httpx
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from bot import replies
from bot.answers import Answer, AnswerBook, Photo
from bot.i18n import ENGLISH, RUSSIAN, catalog
from detector.params import DetectParams
from detector.render import boxes_to_rows
from detector.result import Box, Detection
from jobs import keys
from jobs.client import DetectionClient
from ops.shapes import iou
from tests.conftest import RedisServer
from tests.images import png_header, tiff_many_strips
from tests.web_support import (
    SHAPES_RU,
    WebServer,
    init_data,
    raw_request,
    shapes_png,
    status_of,
    tma,
    web_servers,
)
from tests.workers import running_workers, wait_for
from web.access import WEB_LANE_BASE, Caller

TOKEN = "424242:WEB-test-token-not-real"
KEYS = ("key-one-0123456789", "key-two-0123456789", "key-three-012345678")
ORIGIN = "https://app.example"
JOB_DELAY_MS = "300"
# The keyed web keeps results an hour (DETBOT_ANSWER_TTL), not the queue's day.
ANSWER_TTL = 3600
DETECT = "/api/v1/detect"


@dataclass
class Stack:
    redis: Redis
    open: WebServer
    keyed: WebServer
    strict: WebServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("web-api")
    names = workdir / "names.json"
    names.write_text(SHAPES_RU, encoding="utf-8")
    server = RedisServer(workdir / "redis")
    server.start()
    try:
        with running_workers(server.url, env={"DETBOT_TEST_JOB_DELAY_MS": JOB_DELAY_MS}, log_dir=workdir), \
                web_servers(
                    server.url, workdir,
                    open={"DETBOT_WEB_MODELS": "idle", "DETBOT_CLASS_NAMES": str(names)},
                    keyed={"DETBOT_WEB_KEYS": ",".join(KEYS), "DETBOT_WEB_CORS_ORIGINS": ORIGIN,
                           "TELEGRAM_BOT_TOKEN": TOKEN, "DETBOT_ANSWER_TTL": str(ANSWER_TTL)},
                    strict={"DETBOT_WEB_KEYS": "strict-a-0123456789,strict-b-0123456789",
                            "DETBOT_WEB_RATE_LIMIT_KEY": "3", "DETBOT_WEB_RATE_LIMIT_ADDRESS": "5",
                            "DETBOT_WEB_REQUEST_LIMIT": "30"},
                ) as servers:
            redis = Redis.from_url(server.url)
            yield Stack(redis, servers["open"], servers["keyed"], servers["strict"])
            redis.close()
    finally:
        server.stop()


def submit(client: httpx.Client, image: bytes, **fields: str) -> httpx.Response:
    return client.post(DETECT, files={"image": ("shapes.png", image, "image/png")}, data=fields)


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def finished(client: httpx.Client, job_id: str) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        body: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}", params={"wait": 20}).json()
        return body if body["status"] in ("done", "failed") else None

    return wait_for(done, 120, f"job {job_id}")


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


# -- the happy path --------------------------------------------------------------------------------------

def test_a_photo_is_accepted_with_202_and_one_waiting_request_gets_the_result(stack: Stack) -> None:
    image, shapes = shapes_png(1300, least=3)
    with stack.open.client() as client:
        response = submit(client, image, confidence="0.3")
        job_id = accepted(response)
        assert len(job_id) == 32 and response.headers["location"] == f"/api/v1/jobs/{job_id}"
        # One long-polling request, answered when the worker finished (the job takes ≥ 300 ms).
        body = client.get(f"/api/v1/jobs/{job_id}", params={"wait": 25}).json()
    assert body["status"] == "done", body
    result = body["result"]
    # The `detbot detect --json` schema, as the CLI prints it (less the file name).
    expected = Detection.from_dict(result).to_dict()
    assert set(result) == set(expected) and result["confidence"] == 0.3
    assert result["width"] > 0 and result["boxes"]
    floor, candidates = body["floor"], body["candidates"]
    assert floor == 0.05
    assert [c["confidence"] for c in candidates] == sorted((c["confidence"] for c in candidates), reverse=True)
    assert all(c["confidence"] >= floor for c in candidates)
    assert [b for b in candidates if b["confidence"] >= 0.3] == result["boxes"]  # the result is a view of them
    for shape in shapes:  # every drawn shape is among the kept boxes
        assert any(c["class_name"] == shape.name and iou(shape.box, (c["x1"], c["y1"], c["x2"], c["y2"])) >= 0.5
                   for c in candidates), shape
    assert set(body["names"]) == {"en", "ru"}
    assert 0 < body["expires_in"] <= 24 * 3600


def test_the_annotated_image_is_served_at_the_url_the_result_gives(stack: Stack) -> None:
    with stack.open.client() as client:
        body = finished(client, accepted(submit(client, shapes_png(1310)[0])))
        image = client.get(str(body["image_url"]))
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content[:3] == b"\xff\xd8\xff"


def test_status_goes_from_queued_with_its_position_to_running_to_done(stack: Stack) -> None:
    image = shapes_png(1320)[0]
    with stack.open.client() as client:
        # A model whose queue no worker serves: its jobs wait, in order.
        idle = [accepted(submit(client, image, model="idle")) for _ in range(2)]
        assert [client.get(f"/api/v1/jobs/{j}").json() for j in idle] == [
            {"id": idle[0], "status": "queued", "position": 1}, {"id": idle[1], "status": "queued", "position": 2}]
        # On the served queue: three at once, the worker takes one at a time (300 ms each).
        jobs = [accepted(submit(client, image)) for _ in range(3)]
        last = client.get(f"/api/v1/jobs/{jobs[2]}").json()
        assert last["status"] == "queued" and last["position"] >= 1
        seen = {"queued"}
        wait_for(lambda: seen.add(client.get(f"/api/v1/jobs/{jobs[2]}").json()["status"]) or "running" in seen,
                 60, "the last job to run", interval=0.02)
        assert finished(client, jobs[2])["status"] == "done"


def test_an_idempotency_key_makes_a_retry_the_same_job(stack: Stack) -> None:
    image = shapes_png(1330)[0]
    with stack.open.client() as client:
        first = accepted(client.post(DETECT, files={"image": ("a.png", image)}, headers={"Idempotency-Key": "k-1"}))
        again = accepted(client.post(DETECT, files={"image": ("a.png", image)}, headers={"Idempotency-Key": "k-1"}))
        other = accepted(client.post(DETECT, files={"image": ("a.png", image)}, headers={"Idempotency-Key": "k-2"}))
        bad = client.post(DETECT, files={"image": ("a.png", image)}, headers={"Idempotency-Key": "no spaces"})
    assert first == again != other
    assert error_of(bad)[:2] == (400, "bad_field")


# -- bad input: the bot's answers, as 4xx ---------------------------------------------------------------

def bot_says(key: str, language: str = ENGLISH, **params: object) -> str:
    return catalog(language).gettext(key, **params)


@pytest.mark.parametrize(("files", "fields", "status", "code", "message"), [
    ({}, {"confidence": "0.4"}, 400, "no_image", "Send the picture in the form field “image”."),
    ({"image": ("notes.txt", b"just some text, not a picture")}, {}, 415, "not_an_image",
     bot_says("error.not_an_image")),
    ({"image": ("empty.png", b"")}, {}, 422, "empty_image", bot_says("error.empty_image")),
    ({"image": ("huge.png", png_header(20000, 20000))}, {}, 422, "image_too_large",
     bot_says("error.image_too_large", megapixels=40)),
    ({"image": ("strips.tif", tiff_many_strips())}, {}, 422, "too_complex_image", bot_says(replies.TOO_COMPLEX_IMAGE)),
    ({"image": ("ok.png", b"PNG")}, {"confidence": "abc"}, 400, "bad_field",
     bot_says(replies.NOT_A_CONFIDENCE, token="abc")),
    ({"image": ("ok.png", b"PNG")}, {"confidence": "40"}, 400, "bad_field", bot_says(replies.PERCENT_HINT, value="40")),
    ({"image": ("ok.png", b"PNG")}, {"confidence": "-0.2"}, 400, "bad_field",
     bot_says(replies.OUT_OF_RANGE, token="-0.2")),
    ({"image": ("ok.png", b"PNG")}, {"classes": "circle 0.4"}, 400, "bad_field",
     bot_says(replies.NOT_A_CLASS, name="0.4")),
    ({"image": ("ok.png", b"PNG")}, {"classes": "circel"}, 400, "unknown_class",
     "There is no class “circel” — did you mean “circle”?"),
    ({"image": ("ok.png", b"PNG")}, {"model": "yolo-huge"}, 400, "unknown_model",
     "There is no model “yolo-huge”. Available: detbot, idle."),
])
def test_bad_input_gets_the_bots_answer_as_a_4xx_with_a_message(
    stack: Stack, files: dict[str, object], fields: dict[str, str], status: int, code: str, message: str,
) -> None:
    with stack.open.client() as client:
        # A form without an image still has to be a form: send the fields as multipart anyway.
        response = client.post(DETECT, files=files or {"other": ("x.txt", b"x")}, data=fields)
    assert error_of(response) == (status, code, message)


def test_refusals_speak_the_browsers_language(stack: Stack) -> None:
    with stack.open.client(**{"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.5"}) as client:
        response = client.post(DETECT, files={"image": ("notes.txt", b"not a picture")})
        wrong = client.post(DETECT, files={"image": ("a.png", b"PNG")}, data={"classes": "квадрад"})
    assert error_of(response) == (415, "not_an_image", bot_says("error.not_an_image", RUSSIAN))
    assert error_of(wrong) == (400, "unknown_class", "Класса «квадрад» нет — может быть, «квадрат»?")


def test_a_job_the_worker_cannot_read_ends_failed_with_the_bots_sentence(stack: Stack) -> None:
    image = shapes_png(1340)[0]
    truncated = image[: len(image) // 2]  # a sound header, half the pixels: only decoding finds out
    with stack.open.client() as client:
        body = finished(client, accepted(submit(client, truncated)))
    assert body == {"id": body["id"], "status": "failed",
                    "error": {"code": "corrupt_image", "message": bot_says("error.corrupt_image")}}


def test_unknown_and_impossible_job_ids_are_404(stack: Stack) -> None:
    with stack.open.client() as client:
        for path in ("/api/v1/jobs/" + "0" * 32, "/api/v1/jobs/NOT-AN-ID", "/api/v1/jobs/" + "0" * 32 + "/image"):
            assert error_of(client.get(path))[:2] == (404, "not_found"), path


# -- web jobs and the bot ---------------------------------------------------------------------------------

def test_web_jobs_never_reach_the_bots_stream_and_chat_jobs_never_reach_the_web(stack: Stack) -> None:
    redis = stack.redis
    with stack.open.client() as client:
        job_id = accepted(submit(client, shapes_png(1350)[0]))
        assert finished(client, job_id)["status"] == "done"
        # A photo from a chat, queued the bot's way: answered on the bot's stream, invisible to the web.
        bot = DetectionClient(redis, consumer="test-bot")
        chat_job = bot.submit(shapes_png(1351)[0], DetectParams(0.3), routing={"chat_id": 5151, "message_id": 1})
        (completion,) = wait_for(lambda: bot.wait(block_ms=500), 60, "the chat's completion")
        assert completion.job_id == chat_job
        assert error_of(client.get(f"/api/v1/jobs/{chat_job}"))[:2] == (404, "not_found")
    bot_events = [fields[b"job_id"].decode() for _, fields in redis.xrange(keys.events("detbot"))]
    web_events = [fields[b"job_id"].decode() for _, fields in redis.xrange(keys.web_events("detbot"))]
    assert job_id not in bot_events and chat_job in bot_events
    assert job_id in web_events and chat_job not in web_events
    routing = json.loads(redis.hget(keys.job(job_id), "routing") or b"{}")
    assert routing["kind"] == "web" and routing["chat_id"] >= WEB_LANE_BASE  # a lane no Telegram chat has


def test_each_key_is_a_lane_a_flood_of_one_key_waits_behind_another_keys_photo(stack: Stack) -> None:
    image = shapes_png(1360)[0]
    one, two = stack.keyed.client(**{"X-API-Key": KEYS[0]}), stack.keyed.client(**{"X-API-Key": KEYS[1]})
    with one, two:
        wait_for(lambda: stack.redis.llen("rq:queue:detbot") == 0, 120, "an empty queue")
        flood = [accepted(submit(one, image)) for _ in range(6)]
        single = accepted(submit(two, image))
        positions = {job: one.get(f"/api/v1/jobs/{job}").json().get("position") for job in flood}
        mine = two.get(f"/api/v1/jobs/{single}").json()["position"]
        # At most 3 of key one's photos are in RQ's list; the rest wait behind key two's.
        assert mine <= 4, (mine, positions)
        assert all(p is None or p > mine for p in (positions[j] for j in flood[3:])), (mine, positions)
        for job in [*flood, single]:
            assert finished(one if job in flood else two, job)["status"] == "done"


def test_a_lane_holds_at_most_a_chats_share_of_the_queue(stack: Stack) -> None:
    """A key (here: a keyless server's address) is capped like a chat (jobs.fair.chat_limit): its photos
    beyond it get 429, and other lanes still get in."""
    lane = Caller(-1, "", "127.0.0.1").lane
    idle = DetectionClient(stack.redis, queue_name="idle")  # no worker serves it: what is queued stays
    image = shapes_png(1370)[0]
    room = idle.chat_room(lane)
    added = idle.submit_many([image] * room, DetectParams(0.3), [{"kind": "web", "chat_id": lane, "owner": ""}] * room)
    try:
        with stack.open.client() as client:
            status, code, message = error_of(submit(client, image, model="idle"))
        assert (status, code) == (429, "too_many_waiting") and "waiting" in message
        added.append(idle.submit(image, DetectParams(0.3), routing={"chat_id": 4242, "message_id": 1}))
    finally:  # the lane as it was: the module's other tests use the idle queue too
        pipe = stack.redis.pipeline()
        for job_id in added:
            for key in (keys.lane_in_flight("idle", lane), keys.lane_in_flight("idle", 4242), keys.held("idle")):
                pipe.srem(key, job_id)
            pipe.lrem(keys.lane_held("idle", lane), 0, job_id)
            pipe.lrem("rq:queue:idle", 0, job_id)
        pipe.execute()


# -- keys, limits ------------------------------------------------------------------------------------------

def test_with_keys_every_api_request_needs_one_and_sees_only_its_own_jobs(stack: Stack) -> None:
    image = shapes_png(1370)[0]
    with stack.keyed.client() as anonymous, stack.keyed.client(**{"X-API-Key": KEYS[0]}) as one, \
            stack.keyed.client(**{"X-API-Key": KEYS[1]}) as two:
        assert anonymous.get("/api/v1/info").json()["keys_required"] is True  # says what it needs, to anyone
        assert error_of(submit(anonymous, image))[:2] == (401, "key_missing")
        assert error_of(submit(stack.keyed.client(**{"X-API-Key": "guessed"}), image))[:2] == (401, "key_wrong")
        in_url = anonymous.post(f"{DETECT}?api_key={KEYS[0]}", files={"image": ("a.png", image)})
        assert error_of(in_url)[:2] == (400, "secret_in_url")
        job_id = accepted(submit(one, image))
        assert error_of(two.get(f"/api/v1/jobs/{job_id}"))[:2] == (404, "not_found")
        assert error_of(anonymous.get(f"/api/v1/jobs/{job_id}"))[:2] == (401, "key_missing")
        assert finished(one, job_id)["status"] == "done"
        assert error_of(two.get(f"/api/v1/jobs/{job_id}/image"))[:2] == (404, "not_found")
        # Results expire like answers: DETBOT_ANSWER_TTL from the job's end, the image with them.
        wait_for(lambda: 0 < stack.redis.ttl(keys.job(job_id)) <= ANSWER_TTL, 30, "the answers' lifetime")
        assert 0 < stack.redis.ttl(keys.annotated(job_id)) <= ANSWER_TTL
        assert 0 < one.get(f"/api/v1/jobs/{job_id}").json()["expires_in"] <= ANSWER_TTL
    assert not any(key in stack.keyed.output() for key in KEYS)  # never in a log line


def test_photos_per_minute_are_limited_per_key_and_per_address(stack: Stack) -> None:
    image = shapes_png(1380)[0]
    with stack.strict.client(**{"X-API-Key": "strict-a-0123456789"}) as a, \
            stack.strict.client(**{"X-API-Key": "strict-b-0123456789"}) as b:
        for _ in range(3):
            accepted(submit(a, image))
        over_key = submit(a, image)
        for _ in range(2):
            accepted(submit(b, image))
        over_address = submit(b, image)  # five from this address already
    assert error_of(over_key)[:2] == (429, "rate_limited")
    assert "3 photos per minute per API key" in error_of(over_key)[2]
    assert 0 < int(over_key.headers["retry-after"]) <= 60
    assert error_of(over_address)[:2] == (429, "rate_limited")
    assert "5 photos per minute from one address" in error_of(over_address)[2]


def test_a_flood_of_requests_from_one_address_is_refused_before_anything_else(stack: Stack) -> None:
    with stack.strict.client() as client:
        statuses = [client.get("/api/v1/info").status_code for _ in range(31)]
        refused = client.get("/api/v1/info")
        page = client.get("/")
    assert statuses[-1] == 429 and statuses.count(200) <= 30
    assert error_of(refused)[:2] == (429, "rate_limited") and int(refused.headers["retry-after"]) > 0
    assert page.status_code == 200  # the page itself is not an API request


# -- hostile web input ---------------------------------------------------------------------------------------

def test_cors_is_closed_by_default_and_other_sites_cannot_even_send(stack: Stack) -> None:
    image = shapes_png(1390)[0]
    with stack.open.client() as client:
        evil = {"Origin": "https://evil.example"}
        preflight = client.options(DETECT, headers={**evil, "Access-Control-Request-Method": "POST"})
        simple_post = client.post(DETECT, files={"image": ("a.png", image)}, headers=evil)
        same_site = client.post(DETECT, files={"image": ("a.png", image)}, headers={"Origin": stack.open.url})
    assert error_of(preflight)[:2] == (403, "cross_origin")
    assert error_of(simple_post)[:2] == (403, "cross_origin")
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple_post.headers
    accepted(same_site)


def test_a_configured_origin_gets_cors_headers_and_no_other(stack: Stack) -> None:
    with stack.keyed.client() as client:
        preflight = client.options(DETECT, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "x-api-key"})
        info = client.get("/api/v1/info", headers={"Origin": ORIGIN})
        other = client.get("/api/v1/info", headers={"Origin": "https://app.example.evil"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
    assert info.headers["access-control-allow-origin"] == ORIGIN
    assert error_of(other)[:2] == (403, "cross_origin")


def test_a_body_over_the_cap_is_refused_before_it_is_read(stack: Stack) -> None:
    port = stack.open.port
    # Content-Length says 30 MB; only the headers are sent: the answer comes without a byte of body.
    announced = raw_request(port, f"POST {DETECT} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: multipart/form-data; "
                                  f"boundary=x\nContent-Length: {30 * 1024 * 1024}")
    assert status_of(announced) == 413 and b'"too_big"' in announced
    # No Content-Length (chunked): a well-formed upload that never ends, counted as it streams, cut off.
    part = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    chunks = [part, *([b"x" * 65536] * 400)]  # 25 MB of "image", never finished
    streamed = raw_request(
        port, f"POST {DETECT} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: multipart/form-data; boundary=x\n"
              "Transfer-Encoding: chunked",
        (b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks),
    )
    assert status_of(streamed) == 413 and b'"too_big"' in streamed
    # Routes that take no upload take a few kilobytes at most.
    small = raw_request(port, f"GET /api/v1/info HTTP/1.1\nHost: 127.0.0.1\nContent-Length: {200 * 1024}",
                        iter([b"y" * 200 * 1024]))
    assert status_of(small) == 413


@pytest.mark.parametrize("path", [
    "/static/../web/app.py", "/static/../../pyproject.toml", "/static/..%2fapp.py",
    "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/%2e%2e%2fjobs.py", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "/i18n/..%2f..%2fpyproject.json",
    "/i18n/../locales/en.json", "/api/v1/jobs/..%2f..%2fetc%2fpasswd", "/api/v1/jobs/%2e%2e%2f" + "0" * 26,
])
def test_no_path_leaves_the_page_s_own_files(stack: Stack, path: str) -> None:
    own = raw_request(stack.open.port, "GET /static/app.js HTTP/1.1\nHost: 127.0.0.1")
    assert status_of(own) == 200 and b"use strict" in own  # the page's files are served, and only they
    response = raw_request(stack.open.port, f"GET {path} HTTP/1.1\nHost: 127.0.0.1")
    assert status_of(response) in (400, 404), response[:200]
    assert b"import " not in response and b"[project]" not in response and b"root:" not in response


def test_every_response_keeps_the_page_to_itself(stack: Stack) -> None:
    with stack.open.client() as client:
        page, api = client.get("/"), client.get("/api/v1/info")
    for response in (page, api):
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert api.headers["cache-control"] == "no-store"
    assert "server" not in api.headers


def test_the_openapi_schema_describes_the_api(stack: Stack) -> None:
    with stack.open.client() as client:
        schema = client.get("/api/v1/openapi.json").json()
    paths = schema["paths"]
    assert {"/api/v1/detect", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/image", "/api/v1/info",
            "/api/v1/answers/{answer_id}"} <= set(paths)
    body = paths["/api/v1/detect"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["image"] and body["properties"]["image"]["format"] == "binary"
    assert "202" in paths["/api/v1/detect"]["post"]["responses"]
    job = schema["components"]["schemas"]["JobModel"]["properties"]
    assert {"status", "position", "result", "candidates", "floor", "image_url"} <= set(job)
    assert "X-API-Key" in json.dumps(schema["components"]["securitySchemes"])


# -- the Mini App's answer endpoint ------------------------------------------------------------------------

def signed(user_id: int, auth_date: float, token: str = TOKEN) -> str:
    return init_data(user_id, token, auth_date)


def save_answer(redis: Redis, answer_id: str, answer: Answer) -> None:
    """Store an answer as the bot of TOKEN does (bot.answers is asynchronous)."""
    async def save() -> None:
        client = AsyncRedis(host="127.0.0.1", port=redis.connection_pool.connection_kwargs["port"])
        try:
            await AnswerBook(client, 3600, int(TOKEN.split(":")[0])).save(answer_id, answer)
        finally:
            await client.aclose()

    asyncio.run(save())


def test_the_mini_app_shows_an_answer_to_whom_may_see_it_and_refuses_anything_unsigned(stack: Stack) -> None:
    """The answer's endpoint (the bot is not needed to read it: tests/test_mini_app.py applies, with one):
    a private chat's answer to its person only, a group's to whoever opened its link; unsigned, forged,
    another bot's or day-old initData is 401 before anything is read."""
    boxes = (Box(0, "circle", 0.91, 10, 10, 50, 50), Box(1, "square", 0.12, 60, 10, 90, 40))
    base = {"width": 100, "height": 80, "confidence": 0.25, "model": "shapes.pt", "classes": None,
            "timings": {}, "class_confidence": {}}
    group = Answer(chat_id=-100555, thread=None, reply_to=7, asker=777, private=False, language="ru", floor=0.05,
                   start=DetectParams(0.25).to_dict(), top=["circle"], photos=[Photo("file-id", 8, base,
                                                                                     boxes_to_rows(boxes))])
    save_answer(stack.redis, "AbCdEfGh123", group)
    save_answer(stack.redis, "PrIvAtE4567", replace(group, chat_id=777, private=True))
    now = int(time.time())
    path = "/api/v1/answers/AbCdEfGh123"
    with stack.keyed.client() as client:
        def opened(data: str, where: str = path) -> httpx.Response:
            return client.get(where, headers=tma(data))

        shown = opened(signed(777, now))
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert [c["class_name"] for c in body["photos"][0]["candidates"]] == ["circle", "square"]
        assert body["floor"] == 0.05 and body["view"] == body["start"]
        assert body["asker"] is True and body["private"] is False
        assert body["photos"][0]["photo_url"] == f"{path}/photos/0"
        forged = signed(777, now).replace("hash=", "hash=0")
        assert error_of(opened(forged))[:2] == (401, "init_data")
        assert error_of(opened(signed(777, now, token="424242:another-bot")))[:2] == (401, "init_data")
        assert error_of(opened(signed(777, now - 2 * 24 * 3600)))[:2] == (401, "init_data")
        assert error_of(client.get(path))[:2] == (401, "init_data")
        assert error_of(client.post(f"{path}/view", json={"confidence": 0.5}, headers=tma(forged)))[:2] == \
            (401, "init_data")
        assert error_of(client.get(f"{path}/photos/0", headers=tma(forged)))[:2] == (401, "init_data")
        # Someone else of the group sees it (who may apply is the bot's to say); a private chat's, nobody else.
        assert opened(signed(778, now)).json()["asker"] is False
        assert error_of(opened(signed(778, now), "/api/v1/answers/PrIvAtE4567"))[:2] == (403, "not_yours")
        assert error_of(opened(signed(777, now), "/api/v1/answers/NoSuchAnswer1"))[:2] == (404, "not_found")
        # A view the answer cannot show is refused here, before the bot hears of it.
        low = client.post(f"{path}/view", json={"confidence": 0.01}, headers=tma(signed(777, now)))
        assert error_of(low)[:2] == (400, "bad_field")
        other = client.post(f"{path}/view", json={"confidence": 0.5, "classes": ["dog"]}, headers=tma(signed(777, now)))
        assert error_of(other)[:2] == (400, "unknown_class")
        assert not stack.redis.exists(keys.inbox(int(TOKEN.split(":")[0])))
    with stack.open.client() as client:  # a web without the bot's token has no Mini App
        assert client.get(path, headers=tma(signed(777, now))).status_code == 404


def test_the_keys_and_the_token_never_reach_a_log(stack: Stack) -> None:
    out = "\n".join(server.output() for server in (stack.open, stack.keyed, stack.strict))
    assert TOKEN not in out and "Traceback" not in out
    assert not any(key in out for key in (*KEYS, "strict-a-0123456789"))
