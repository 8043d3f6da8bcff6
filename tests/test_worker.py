"""One real ``detbot worker`` on tests/assets/shapes.pt, shared by this module: results, bad input, safety."""

from __future__ import annotations

import io
import pickle
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from detector.cores import usable_cores
from detector.params import DetectParams
from jobs import keys, store
from jobs.client import DETECT_JOB, DetectionClient
from jobs.defaults import QUEUE_NAME
from jobs.keys import EVENTS_STREAM
from jobs.store import Completion
from ops.shapes import iou, make_images
from tests.conftest import RedisServer, free_port
from tests.images import png_header, tiff_many_strips
from tests.workers import WorkerProcess, start_worker, wait_for

# A completion on an idle worker takes well under a second; this only bounds a broken test.
COMPLETION_TIMEOUT = 60.0
# Seeds >= 1000: images the model never saw in training or validation.
SEED = 1000


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, wredis: Redis, shapes_model: Path, metrics_port: int,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    w = start_worker(redis_server.url, env={"DETBOT_METRICS_PORT": str(metrics_port)},
                     log_dir=tmp_path_factory.mktemp("worker"))
    yield w
    w.close()


@pytest.fixture
def client(wredis: Redis, worker: WorkerProcess) -> DetectionClient:
    return DetectionClient(wredis)


def completion(redis: Redis, job_id: str) -> Completion:
    found = wait_for(lambda: store.read_completion(redis, job_id), COMPLETION_TIMEOUT, f"job {job_id}")
    assert found is not None
    return found


def events_for(redis: Redis, job_id: str) -> int:
    return sum(1 for _id, f in redis.xrange(EVENTS_STREAM) if f[b"job_id"].decode() == job_id)


def submit_raw(client: DetectionClient, image: bytes, params: dict[str, object]) -> str:
    """A job stored with raw parameters, as a producer other than the bot could store it."""
    job_id = uuid.uuid4().hex
    store.save_job(client.redis, job_id, image, params, {})
    client.queue.enqueue(DETECT_JOB, job_id, job_id=job_id)
    return job_id


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def test_every_drawn_shape_is_found_with_its_class(client: DetectionClient, wredis: Redis) -> None:
    images = make_images(SEED, 4)
    ids = [
        client.submit(jpeg(img), DetectParams(0.25), routing={"chat": -100, "message": i, "thread": None})
        for i, (img, _) in enumerate(images)
    ]
    for i, (job_id, (img, shapes)) in enumerate(zip(ids, images, strict=True)):
        done = completion(wredis, job_id)
        assert done.ok, done
        assert done.routing == {"chat": -100, "message": i, "thread": None}
        assert done.detection is not None
        assert (done.detection["width"], done.detection["height"]) == (img.shape[1], img.shape[0])
        boxes = done.detection["boxes"]
        for shape in shapes:
            best = max((iou(shape.box, (b["x1"], b["y1"], b["x2"], b["y2"])) for b in boxes
                        if b["class_name"] == shape.name), default=0.0)
            assert best >= 0.5, f"{shape} not found in image {i}: {boxes}"
        assert done.annotated is not None
        annotated = Image.open(io.BytesIO(done.annotated))
        assert (annotated.format, annotated.size) == ("JPEG", (img.shape[1], img.shape[0]))
        assert events_for(wredis, job_id) == 1
        assert store.load_image(wredis, job_id) is None  # the photo's bytes are gone once answered


def test_class_filter_and_parameters_reach_the_detector(client: DetectionClient, wredis: Redis) -> None:
    img, shapes = make_images(SEED + 1, 1)[0]
    wanted = shapes[0].name
    only = completion(wredis, client.submit(png(img), DetectParams(0.25, [wanted])))
    assert only.ok and only.detection is not None
    assert only.detection["classes"] == [wanted]
    assert {b["class_name"] for b in only.detection["boxes"]} == {wanted}
    assert only.detection["confidence"] == 0.25

    unknown = completion(wredis, client.submit(png(img), DetectParams(0.25, ["giraffe"])))
    assert (unknown.ok, unknown.code) == (False, "unknown_class")
    assert "circle" in unknown.message  # the message lists what the model knows
    # ... and says it as data too, for the bot to word in the chat's language.
    assert unknown.details == {"unknown": ["giraffe"], "known": ["circle", "square", "triangle"]}

    # Parameters cross Redis: whatever a producer stored, the worker checks them like any other input.
    bad_conf = completion(wredis, submit_raw(client, png(img), {"confidence": 1.5, "classes": None}))
    assert (bad_conf.ok, bad_conf.code) == (False, "invalid_confidence")
    bad_classes = completion(wredis, submit_raw(client, png(img), {"confidence": 0.3, "classes": "circle"}))
    assert (bad_classes.ok, bad_classes.code) == (False, "invalid_params")


def test_each_bad_image_gets_its_code_and_the_worker_goes_on(
    client: DetectionClient, wredis: Redis, worker: WorkerProcess
) -> None:
    good = jpeg(make_images(SEED + 2, 1)[0][0])
    bad = {
        "empty_image": b"",
        "not_an_image": b"%PDF-1.4 this is a document, not a photo",
        "corrupt_image": good[: len(good) // 2],
        "image_too_large": png_header(10_000, 10_000),
        "unsupported_format": b"P6\n2 2\n255\n" + bytes(12),
        # Straight to the queue, past the bot's check: the worker refuses it from its structure too.
        "too_complex_image": tiff_many_strips(),
    }
    ids = {code: client.submit(data, DetectParams(0.3), routing={"code": code}) for code, data in bad.items()}
    after = client.submit(good, DetectParams(0.3))

    for code, job_id in ids.items():
        done = completion(wredis, job_id)
        assert (done.ok, done.code, done.routing) == (False, code, {"code": code})
        assert done.message and "Traceback" not in done.message
        assert done.annotated is None
    assert completion(wredis, after).ok
    assert worker.proc.poll() is None
    log = worker.output()
    assert "Traceback" not in log
    for job_id in ids.values():
        lines = [line for line in log.splitlines() if job_id in line]
        assert len(lines) == 1, lines  # one line per job, no stack trace


def test_expired_image_is_answered_not_dropped(client: DetectionClient, wredis: Redis) -> None:
    job_id = "expired0" * 4
    store.save_job(wredis, job_id, b"bytes", {"confidence": 0.3, "classes": None}, {"chat": 5})
    wredis.delete(keys.image(job_id))  # what IMAGE_TTL does to a photo that waited too long
    client.queue.enqueue(DETECT_JOB, job_id, job_id=job_id)

    done = completion(wredis, job_id)
    assert (done.ok, done.code, done.routing) == (False, store.CODE_IMAGE_EXPIRED, {"chat": 5})


def test_a_job_run_twice_is_answered_once(client: DetectionClient, wredis: Redis, worker: WorkerProcess) -> None:
    job_id = client.submit(jpeg(make_images(SEED + 3, 1)[0][0]), DetectParams(0.3))
    assert completion(wredis, job_id).ok
    client.queue.push_job_id(job_id)  # the same job again, as after a worker was wrongly presumed dead

    wait_for(lambda: f"job {job_id} duplicate" in worker.output(), COMPLETION_TIMEOUT, "the second run")
    assert events_for(wredis, job_id) == 1
    done = store.read_completion(wredis, job_id)
    assert done is not None and done.ok  # the first answer stands


def test_a_job_the_worker_lost_track_of_is_run_again(
    client: DetectionClient, wredis: Redis, worker: WorkerProcess
) -> None:
    """A Redis outage at the end of a job can leave it recorded as running on a live, idle worker."""
    job_id = "stranded" * 4
    store.save_job(wredis, job_id, jpeg(make_images(SEED + 5, 1)[0][0]), {"confidence": 0.25, "classes": None}, {})
    client.queue.create_job(DETECT_JOB, args=[job_id], job_id=job_id).save()
    wredis.hset(keys.running(client.queue.name), job_id, worker.name)  # recorded, but never run, never queued

    done = completion(wredis, job_id)

    assert done.ok
    assert f"job {job_id} requeued at the front: worker {worker.name} lost track of it" in worker.output()
    assert events_for(wredis, job_id) == 1


class _OpensAFile:
    """Unpickling this creates a file: proof of code execution if a worker ever unpickled a payload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _refused(redis: Redis, job_id: str) -> bool:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status() == JobStatus.FAILED


def test_only_json_detect_jobs_run(
    client: DetectionClient, wredis: Redis, worker: WorkerProcess, tmp_path: Path
) -> None:
    marker, made_dir = tmp_path / "unpickled", tmp_path / "mkdir-ran"
    assert pickle.loads(pickle.dumps(_OpensAFile(str(tmp_path / "probe")))) is not None  # the payload works
    (tmp_path / "probe").unlink()
    pickled = Queue(QUEUE_NAME, connection=wredis).enqueue(DETECT_JOB, _OpensAFile(str(marker)))
    other = Queue(QUEUE_NAME, connection=wredis, serializer=JSONSerializer).enqueue("os.mkdir", str(made_dir))

    for job in (pickled, other):
        wait_for(lambda job=job: _refused(wredis, job.id), COMPLETION_TIMEOUT, f"job {job.id} to be refused")
    assert not marker.exists()
    assert not made_dir.exists()
    log = worker.output()
    assert f"job {pickled.id} refused unrun: its payload is not JSON" in log
    assert f"job {other.id} refused unrun: function 'os.mkdir' is not allowed" in log
    assert completion(wredis, client.submit(b"", DetectParams(0.3))).code == "empty_image"  # still working
    assert worker.proc.poll() is None


def test_health_and_metrics_endpoints(client: DetectionClient, wredis: Redis, metrics_port: int) -> None:
    assert completion(wredis, client.submit(jpeg(make_images(SEED + 4, 1)[0][0]), DetectParams(0.25))).ok
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10) as reply:
        assert reply.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines() if line and not line.startswith("#")
    }
    assert samples['detbot_jobs_total{outcome="ok",reason="none"}'] >= 1
    assert samples["detbot_inference_seconds_count"] >= 1
    # A lone photo on an otherwise idle machine ran on every core (see detector.cores).
    assert samples[f'detbot_inferences_total{{threads="{usable_cores()}"}}'] >= 1
    assert samples["detbot_worker_ready"] == 1
    assert sum(v for k, v in samples.items() if k.startswith("detbot_detections_total{")) >= 1
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/nope", timeout=10)
    assert missing.value.code == 404


def test_the_worker_publishes_its_model_class_names(client: DetectionClient, wredis: Redis) -> None:
    """The bot checks filters against these before queueing (issue 12): they come from the model itself."""
    assert store.class_names(wredis, client.queue.name) == ["circle", "square", "triangle"]
    assert store.class_names(wredis, "no-such-queue") is None
