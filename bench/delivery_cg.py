"""One side of bench.delivery's instruction count: commands run under callgrind.

    valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \\
        python -m bench.delivery_cg MODE USERS OUT_JSON

MODE is ``celery`` (handlers subscribed, dispatch to Celery, ``RELAY="notify"``: the
documented web-process configuration) or ``off``. Instrumentation is switched on
(``callgrind_control -i on``) only around the measured commands, after a warm-up;
the relay thread's NOTIFYs sent meanwhile are counted into OUT_JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from bench.common import setup_django


def side() -> None:
    mode, users, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # bench.delivery's database, made and migrated by it.
    setup_django("fluvius_bench_delivery", sqlite=os.environ.get("FLUVIUS_BENCH_CG_SQLITE") == "1", drop=False,
                 migrate=False)
    from celery import Celery
    from django.conf import settings

    from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers

    app = Celery("bench-delivery-cg", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/14"),
                 set_as_current=False)
    registry = HandlerRegistry()

    @event_handler(["user-created", "user-renamed"], namespace="app-user", name="bench.audit", registry=registry)
    def audit(event):  # never runs here
        return None

    handlers.register(audit.handler_spec)
    queue = f"fluvius-bench-cg-{uuid.uuid4().hex[:8]}"  # SQLite relays here too: a queue of its own
    fluvius = {**settings.FLUVIUS, "CELERY_APP": app, "CELERY_QUEUE": queue,
               "DISPATCH": None if mode == "off" else mode, "RELAY": "notify"}
    try:
        run(fluvius, users, out)
    finally:
        import redis

        redis.Redis.from_url(app.conf.broker_url).delete(queue)
        app.close()


def run(fluvius: dict, users: int, out: str) -> None:
    from django.test import override_settings

    from bench.delivery import command_run
    from django_fluvius.delivery.dispatch import relay

    with override_settings(FLUVIUS=fluvius):
        command_run(3)  # warm-up: imports, connections, the relay thread
        assert relay.flush(30)
        before = relay.notified
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
        command_run(users)
        assert relay.flush(30)
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True)
        with open(out, "w") as fh:
            json.dump({"notifies": relay.notified - before}, fh)


if __name__ == "__main__":
    side()
