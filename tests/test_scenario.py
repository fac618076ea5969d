"""The main job: the example project's scenario runs end to end."""

import re

import pytest
from django.core.management import call_command

from django_fluvius.models import CommandLog, Event


@pytest.mark.django_db
def test_run_scenario_prints_commands_events_and_state(capsys):
    call_command("run_scenario")
    out = capsys.readouterr().out
    assert out.count("OK      ") == 8
    assert out.count("REFUSED ") == 5
    assert "DomainError [deactivate-user.user-is-already-inactive]: User is already inactive" in out
    assert "ConcurrencyConflict [stale_version]" in out
    assert "CommandValidationError [invalid_payload]" in out
    assert re.search(r"order \S+ v4: status=shipped total=28.60", out)
    assert "Scenario complete." in out
    assert Event.objects.count() == 8
    assert set(Event.objects.values_list("namespace", flat=True)) == {"app-user", "app-order"}
    assert CommandLog.objects.filter(status="rejected").count() == 4  # a validation error never reaches the bus
