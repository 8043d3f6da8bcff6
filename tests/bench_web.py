"""What the web face costs: ``python -m tests.bench_web [--photos 200]`` (not collected by pytest).

A real Redis, one real worker on the shapes model and a real ``detbot web``: photos are sent one after
another through the API (POST, then one long-polling GET until done), and again from several clients at
once. Printed: the POST's own time (checks + submit), upload to result end to end against the worker's own
time for the job (the API's and the queue's overhead is the difference), and the web process's RSS idle and
after the run. Name the CPU and its load beside any figure you keep.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import RedisServer
from tests.web_support import shapes_png, web_servers
from tests.workers import running_workers

KEYS = [f"bench-key-{n:02d}-0123456789" for n in range(64)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one(client: httpx.Client, image: bytes) -> tuple[float, float, float]:
    """POST ms, end-to-end ms, the worker's own ms for the job."""
    start = time.perf_counter()
    job_id = client.post("/api/v1/detect", files={"image": ("s.png", image)}).json()["id"]
    posted = time.perf_counter()
    while True:
        body = client.get(f"/api/v1/jobs/{job_id}", params={"wait": 20}).json()
        if body["status"] == "done":
            break
    done = time.perf_counter()
    return (posted - start) * 1e3, (done - start) * 1e3, float(body["result"]["timings"]["total_ms"])


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    # One picture: pictures of other sizes letterbox to other input shapes, and OpenVINO compiling a new
    # shape (a worker's cost, docs/performance.md) would drown the web's own.
    images = [shapes_png(5000)[0]]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        redis = RedisServer(workdir / "redis")
        redis.start()
        try:
            unlimited = {"DETBOT_WEB_RATE_LIMIT_ADDRESS": "0", "DETBOT_WEB_RATE_LIMIT_KEY": "0",
                         "DETBOT_WEB_REQUEST_LIMIT": "0", "DETBOT_WEB_KEYS": ",".join(KEYS)}
            with running_workers(redis.url, log_dir=workdir), \
                    web_servers(redis.url, workdir, bench=unlimited) as servers:
                server = servers["bench"]
                with server.client(**{"X-API-Key": KEYS[0]}) as client:
                    for _ in range(5):  # warm-up: the worker's first photos compile its paths
                        one(client, images[0])
                    idle = rss_mb(server.proc.pid)
                    serial = [one(client, images[i % len(images)]) for i in range(args.photos)]
                with ThreadPoolExecutor(args.clients) as pool:
                    def timed(i: int) -> tuple[float, float, float]:
                        # One key per client: each its own lane, as several API users.
                        with server.client(**{"X-API-Key": KEYS[i % args.clients]}) as own:
                            return one(own, images[i % len(images)])

                    started = time.perf_counter()
                    crowd = list(pool.map(timed, range(args.photos)))
                    crowd_s = time.perf_counter() - started
                after = rss_mb(server.proc.pid)
        finally:
            redis.stop()
    post, total, worker = zip(*serial, strict=True)
    overhead = [t - w for t, w in zip(total, worker, strict=True)]
    print(f"{args.photos} photos one after another (shapes model, 1 worker):")
    print(f"  POST (checks + submit)      p50 {statistics.median(post):6.1f} ms   p95 {pct(list(post), .95):6.1f} ms")
    print(f"  upload -> result            p50 {statistics.median(total):6.1f} ms   p95 {pct(list(total), .95):6.1f} ms")
    print(f"  the worker's own time       p50 {statistics.median(worker):6.1f} ms")
    print(f"  API + queue overhead        p50 {statistics.median(overhead):6.1f} ms   p95 {pct(overhead, .95):6.1f} ms")
    print(f"{args.photos} photos from {args.clients} clients at once: {args.photos / crowd_s:.1f} photos/s, "
          f"upload -> result p50 {statistics.median(c[1] for c in crowd):.0f} ms")
    print(f"web RSS: {idle:.1f} MB idle, {after:.1f} MB after {2 * args.photos} photos")


if __name__ == "__main__":
    main()
