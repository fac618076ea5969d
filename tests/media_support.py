"""Helpers of the media tests: files of known types, orders, a moto S3 server process
(the fixtures built on them are in media_fixtures.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

# Ports of this test suite's S3 server (helper range 18800-18899; the benchmark uses 188[5-9]x).
S3_PORTS = range(18810, 18840)
S3_CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


def png(size: int = 2000, seed: bytes = b"") -> bytes:
    """Bytes that start like a PNG (the signature is what is checked), ``size`` long."""
    head = b"\x89PNG\r\n\x1a\n" + seed
    return head + os.urandom(max(0, size - len(head)))


def pdf(size: int = 2000) -> bytes:
    head = b"%PDF-1.7\n"
    return head + os.urandom(max(0, size - len(head)))


def files_under(root: Path) -> list[Path]:
    """Every regular file below ``root`` (stages included)."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file())


def place_order(customer_id: uuid.UUID | None = None) -> uuid.UUID:
    from example_project.orders.domain import OrderDomain

    domain = OrderDomain()
    result = domain.process_command(domain.create_command("place-order", {
        "customer_id": str(customer_id or uuid.uuid4()),
        "items": [{"sku": "sku-1", "quantity": 1, "price": "9.50"}],
    }))
    return result.aggregate_id


def free_port() -> int:
    for port in S3_PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"No free port in {S3_PORTS}")


def start_moto(port: int) -> subprocess.Popen:
    """``moto_server`` as a process of its own, answering S3 on 127.0.0.1:<port>."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start in 30 s")


def bucket_keys(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))
