"""A writer process of the rolling-deploy test: runs commands with the handlers it was deployed with.

    python -m tests.subscription_writer COUNT PREFIX

Settings: tests.worker_settings (the test database, DISPATCH="celery", the test
run's queue and broker); ``FLUVIUS_TEST_INSTALL_HANDLERS=1`` installs the test
handlers (the new code), ``0`` leaves them out (the old code). Prints one
position per line, then ``done``.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.worker_settings")
    import django

    django.setup()
    from django.db import OperationalError

    from django_fluvius.delivery.dispatch import relay
    from tests.testapp.domain import NoteDomain

    count, prefix = int(sys.argv[1]), sys.argv[2]
    domain = NoteDomain()
    for i in range(count):
        for _ in range(50):  # SQLite: another writer may hold the lock for a moment
            try:
                result = domain.process_command(domain.create_command("create-note", {"title": f"{prefix} {i}"}))
                break
            except OperationalError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"could not write {prefix} {i}")
        print(result.events[0].position, flush=True)
        time.sleep(0.02)
    relay.flush(20)
    print("done", flush=True)


if __name__ == "__main__":
    main()
