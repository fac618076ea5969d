"""Uploading a 100 MiB file through the media endpoint of a real server (issue 8).

The example project runs under gunicorn (one sync worker, a process of its own,
started here on 127.0.0.1) with uploads going to a ``LocalStorage``. Each run
creates an order and POSTs the file to ``/api/app-order/order/<id>/media/`` as
multipart/form-data from a plain socket (the file's bytes sent with ``sendfile``).

Figures, medians of ``--runs`` interleaved runs:
- throughput of the upload (request sent to 201 received) against the baseline,
  in the same run: the same file copied with the storage API directly,
  ``LocalStorage.put(open(file))`` (streaming, SHA-256, stage, rename).
  Target: upload time <= 2x the baseline.
- peak memory of the server's worker process during an upload, above its idle
  resident size: the kernel's high-water mark (``VmHWM``, reset before each
  upload through ``/proc/<pid>/clear_refs``), checked against ``VmRSS`` sampled
  every 5 ms. Target: < 64 MiB.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import ROOT, arg_parser, dsn, interleaved, pg_server_url, report, setup_django

PORTS = range(18850, 18900)  # this benchmark's share of helper h8's range
MiB = 1024 * 1024
BOUNDARY = "fluvius-bench-boundary"
# Uploads need a signed-in user: HTTP Basic as the benchmark's own user.
# (bench.settings, from the test settings, hash passwords with MD5: cheap on every request.)
AUTHORIZATION = "Basic " + base64.b64encode(b"bench:bench-pw").decode()


# -- the server ------------------------------------------------------------------


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"No free port in {PORTS.start}-{PORTS.stop - 1}.")


def start_server(port: int, env: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "gunicorn", "example_project.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "sync",
        "--timeout", "600", "--log-level", "warning", "--chdir", str(ROOT),
    ]
    server = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}")
        try:
            status, _ = request(port, "GET", "/api/")
            if status == 200 and worker_pid(server.pid):
                return server
        except OSError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise SystemExit("gunicorn did not answer within 60 s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def worker_pid(master: int) -> int | None:
    """The pid of gunicorn's (single) worker: the process that handles requests."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0; needs ptrace rights)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RSSSampler(threading.Thread):
    """Samples a process's VmRSS every 5 ms: the peak as a second opinion on VmHWM."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            self.done.wait(0.005)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


# -- the client --------------------------------------------------------------------


def request(port: int, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw.startswith(b"{") else {})
    finally:
        conn.close()


def post_file(port: int, url: str, path: Path, filename: str, content_type: str) -> tuple[int, dict]:
    """POST a file as multipart/form-data, its bytes sent with ``sendfile`` (zero-copy).

    The client stands in for another machine: it should cost the server's CPUs as
    little as possible, so the figure is the server's, not the client's.
    """
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(head) + path.stat().st_size + len(tail)
    request_head = (f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {AUTHORIZATION}\r\n"
                    f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                    f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        sock.sendall(request_head + head)
        with open(path, "rb") as f:
            sock.sendfile(f)
        sock.sendall(tail)
        response = http.client.HTTPResponse(sock)
        response.begin()
        raw = response.read()
    return response.status, (json.loads(raw) if raw.startswith(b"{") else {})


def drop_database(url: str) -> None:
    """Remove a quick run's own database (a SQLite file, or a PostgreSQL database)."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).unlink(missing_ok=True)
        return
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(dsn(pg_server_url()), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_source(path: Path, size: int) -> str:
    """A file of ``size`` bytes that is a PDF by its first bytes; returns its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = (b"%PDF-1.7\n" if written == 0 else b"") + os.urandom(min(MiB, size - written))
            chunk = chunk[: size - written]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return digest.hexdigest()


def place_order() -> str:
    import uuid

    from example_project.orders.domain import OrderDomain

    domain = OrderDomain()
    return str(domain.process_command(domain.create_command("place-order", {
        "customer_id": str(uuid.uuid4()), "items": [{"sku": "bench", "quantity": 1, "price": "1.00"}],
    })).aggregate_id)


# -- main ----------------------------------------------------------------------------


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--size-mib", type=int, default=100, help="size of the uploaded file (MiB)")
    parser.add_argument("--dir", default=str(ROOT / ".data"),
                        help="where the file, the server's storage root and the baseline's go "
                             "(a tmpfs such as /dev/shm takes the disk out of the figures)")
    args = parser.parse_args(argv)
    size = (4 if args.quick else args.size_mib) * MiB
    runs = 1 if args.quick else args.runs
    # A quick run (the test suite's) gets a database of its own: test runs may overlap.
    db_name = f"fluvius_bench_media_{os.getpid()}" if args.quick else "fluvius_bench_media"
    url = setup_django(db_name, sqlite=args.sqlite)

    from django.contrib.auth import get_user_model
    from django.db import connections

    get_user_model().objects.create_user("bench", password="bench-pw")

    from django_fluvius.media import LocalStorage

    Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-media-", dir=args.dir))
    server_root, baseline_root = work / "server", work / "baseline"
    source = work / "upload.pdf"
    expected_sha = make_source(source, size)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.media_settings", "DATABASE_URL": url,
           "BENCH_MEDIA_ROOT": str(server_root), "BENCH_MEDIA_MAX_SIZE": str(size + MiB),
           "PYTHONPATH": str(ROOT)}
    port = free_port()
    server = start_server(port, env)
    baseline_storage = LocalStorage(path=baseline_root)
    deltas: list[float] = []
    sampled: list[float] = []
    hwm_reset = True
    try:
        pid = worker_pid(server.pid)

        def upload_once(path: Path) -> float:
            order_id = place_order()
            connections.close_all()  # SQLite: leave the database to the server while it writes
            start = time.perf_counter()
            status, entry = post_file(port, f"/api/app-order/order/{order_id}/media/", path, "upload.pdf",
                                      "application/pdf")
            elapsed = time.perf_counter() - start
            if status != 201:
                raise SystemExit(f"upload answered {status}: {entry}")
            return elapsed, entry

        # Warm up the worker (imports, database connection, first request) with a small file.
        small = work / "small.pdf"
        make_source(small, 64 * 1024)
        upload_once(small)
        idle_kib = status_kib(pid, "VmRSS")

        def subject() -> float:
            nonlocal hwm_reset
            hwm_reset = reset_peak(pid) and hwm_reset
            sampler = RSSSampler(pid)
            sampler.start()
            elapsed, entry = upload_once(source)
            sampled_peak = sampler.stop()
            if entry["sha256"] != expected_sha or entry["size"] != size:
                raise SystemExit(f"the server stored something else: {entry}")
            peak = max(status_kib(pid, "VmHWM"), sampled_peak) if hwm_reset else sampled_peak
            # Against the idle size measured once, before the first large upload: memory the
            # process kept from an earlier run counts too.
            deltas.append((peak - idle_kib) / 1024)
            sampled.append((sampled_peak - idle_kib) / 1024)
            return elapsed

        def baseline() -> float:
            start = time.perf_counter()
            with open(source, "rb") as f:
                stored = baseline_storage.put(f, name="upload.pdf")
            elapsed = time.perf_counter() - start
            assert stored.sha256 == expected_sha
            return elapsed

        timings = interleaved(subject, baseline, runs)
        peak_hwm_kib = status_kib(pid, "VmHWM")
    finally:
        stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
        connections.close_all()
        if args.quick:
            drop_database(url)

    import statistics

    size_mib = size / MiB
    return report("media_upload", {
        "file size (MiB)": size_mib,
        "upload through the endpoint (s, median)": timings["subject"],
        "storage API copy (s, median)": timings["baseline"],
        "upload MiB/s": size_mib / timings["subject"],
        "storage API MiB/s": size_mib / timings["baseline"],
        "upload / storage API time (target <= 2)": timings["subject"] / timings["baseline"],
        "server idle RSS (MiB)": idle_kib / 1024,
        "server peak above idle, MiB (median; target < 64)": statistics.median(deltas),
        "server peak above idle, sampled VmRSS (MiB)": statistics.median(sampled),
        "server VmHWM at the end (MiB)": peak_hwm_kib / 1024,
    }, lines=[
        f"{size_mib:.0f} MiB PDF, {runs} interleaved runs, gunicorn sync worker on 127.0.0.1:{port}, "
        f"LocalStorage under {args.dir}, {'SQLite' if args.sqlite else 'PostgreSQL'}",
        "peak from VmHWM reset before each upload" if hwm_reset else "peak from sampled VmRSS only "
        "(clear_refs not permitted)",
    ])


if __name__ == "__main__":
    main()
