"""One leader per subscription, with two real OS processes (issue 14).

Two ``manage.py fluvius_relay --loop`` processes run at once on PostgreSQL (LISTEN
for the test's commits, poll as the safety net) and deliver inline, in batches of
five, to two subscriptions, while this process writes events in bursts. Every
delivery records its process and when it ran (tests/relay_handlers.py). Proven:

* each event's effect happens exactly once per subscription;
* both processes led batches, every delivery ran while its own process held the
  subscription's lease, and a delivery run by one process never overlaps one run
  by the other;
* both stop cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from django.db import connection
from django.test import override_settings

from django_fluvius.delivery.dispatch import relay
from django_fluvius.models import Checkpoint
from tests.relay_handlers import NAMES
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Effect

from .dispatch_support import ROOT, fluvius, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BURSTS, PER_BURST = 6, 25


def start_relay(log_path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.relay_settings",
        "FLUVIUS_WORKER_DB_NAME": connection.settings_dict["NAME"],
        "PYTHONPATH": str(ROOT),
    }
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "manage.py", "fluvius_relay", "--loop", "-v", "2"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_two_relay_processes_lead_each_subscription_one_at_a_time_and_deliver_each_event_once(tmp_path):
    logs = [tmp_path / "relay-1.log", tmp_path / "relay-2.log"]
    relays = [start_relay(path) for path in logs]
    written: list[int] = []
    try:
        # Both relays run: each created (or found) the subscriptions at its first round.
        wait_for(lambda: Checkpoint.objects.filter(name__in=NAMES).count() == 2, 60,
                 message="the relays to create the subscriptions")
        domain = NoteDomain()
        # DISPATCH "celery" with RELAY "notify": this process only sends NOTIFY after its commits.
        with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="notify")):
            for burst in range(BURSTS):
                for i in range(PER_BURST):
                    result = domain.process_command(domain.create_command("create-note",
                                                                          {"title": f"b{burst} {i}"}))
                    written.append(result.events[0].position)
                time.sleep(0.3)
            relay.flush(10)
        output = lambda: "\n".join(path.read_text() for path in logs)  # noqa: E731
        wait_for(lambda: Effect.objects.filter(handler__in=NAMES).count() >= 2 * len(written), 90,
                 message=f"every event delivered to both subscriptions\n{output()[-3000:]}")
        time.sleep(0.5)  # a duplicate, if any, would show up now
    finally:
        for process in relays:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in relays:
            try:
                codes.append(process.wait(30))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes.append(None)
    assert codes == [0, 0], "both relays stop cleanly on SIGTERM"
    runs: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    processes: set[int] = set()
    for name in NAMES:
        effects = list(Effect.objects.filter(handler=name).values_list("position", "detail"))
        delivered = sorted(position for position, _ in effects)
        assert delivered == sorted(written), f"{name}: every event's effect exactly once"
        for position, detail in effects:
            pid, started, ended, leader = detail.split()
            assert leader == pid, f"{name}: event {position} delivered by a relay that did not lead it"
            runs[name].append((float(started), float(ended), int(pid)))
            processes.add(int(pid))
    assert processes == {process.pid for process in relays}, "both relay processes led batches"
    for name, calls in runs.items():
        calls.sort()
        for (_, ended, pid), (started, _, other) in zip(calls, calls[1:], strict=False):
            if pid != other:
                assert started >= ended, f"{name}: two relays ran its deliveries at the same time"
