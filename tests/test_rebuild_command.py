"""Safe operations of ``fluvius_rebuild``: no target refuses, ``--all`` asks first, and its
progress is one line per interval in a log and a live line on a terminal."""

import io
import os
import pty
import re
import select

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from django_fluvius.models import RebuildRun
from django_fluvius.ops import progress as progress_module
from django_fluvius.ops.progress import Progress
from tests.testapp.models import Note

from .test_rebuild import make_notes

pytestmark = pytest.mark.django_db


def test_no_target_lists_the_targets_and_refuses():
    ids = make_notes(2)
    Note.objects.filter(pk=ids[0]).update(title="damaged")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="Name what to rebuild .* or pass --all"):
        call_command("fluvius_rebuild", stdout=out, stderr=err)
    listed = err.getvalue()
    assert "test-notes.note" in listed and "app-user.user" in listed and "never rebuilt" in listed
    assert not RebuildRun.objects.exists() and Note.objects.get(pk=ids[0]).title == "damaged"
    with pytest.raises(CommandError, match="not both"):
        call_command("fluvius_rebuild", "note", "--all", stdout=out, stderr=err)


def test_all_asks_first_and_does_nothing_unless_told_yes(monkeypatch):
    ids = make_notes(2)
    Note.objects.filter(pk=ids[0]).update(title="damaged")
    questions = []

    def answer(reply):
        monkeypatch.setattr("builtins.input", lambda prompt: questions.append(prompt) or reply)

    answer("no")
    out = io.StringIO()
    call_command("fluvius_rebuild", "--all", "--no-progress", stdout=out)
    assert "This rebuilds" in out.getvalue() and "test-notes.note" in out.getvalue()
    assert "Rebuild cancelled." in out.getvalue() and questions == ["Type 'yes' to continue, or 'no' to cancel: "]
    assert not RebuildRun.objects.exists() and Note.objects.get(pk=ids[0]).title == "damaged"

    def closed(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", closed)
    with pytest.raises(CommandError, match="pass --no-input"):
        call_command("fluvius_rebuild", "--all", stdout=io.StringIO())
    assert not RebuildRun.objects.exists()

    answer("yes")
    call_command("fluvius_rebuild", "--all", "--no-progress", stdout=io.StringIO())
    assert Note.objects.get(pk=ids[0]).title == "n0"
    assert {"test-notes.note", "test-notes.folder", "app-user.user"} <= set(
        RebuildRun.objects.filter(status="done").values_list("name", flat=True))


def test_all_with_no_input_rebuilds_everything_without_asking(monkeypatch):
    ids = make_notes(1)
    Note.objects.filter(pk=ids[0]).update(title="damaged")
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked despite --no-input"))
    out = io.StringIO()
    call_command("fluvius_rebuild", "--all", "--no-input", "--no-progress", stdout=out)
    assert Note.objects.get(pk=ids[0]).title == "n0" and "test-notes.note: 3 events" in out.getvalue()


# -- progress ---------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_off_a_terminal_one_line_per_interval_and_one_done_line(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    stream = io.StringIO()  # a log file or a pipe: not a terminal
    bar = Progress("x.y", 1300, stream=stream)
    assert bar.interval == 5.0
    for _ in range(13):  # 13 s of work, 100 events a second
        clock.now += 1
        bar.update(100, 10)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [re.search(r"[\d,]+/1,300", line).group() for line in lines[:-1]] == ["500/1,300", "1,000/1,300"]
    assert lines[-1] == "x.y: done, 1,300/1,300 events, 130 aggregates in 00:13 (100 events/s)"


def test_a_short_run_in_a_log_prints_its_figures_once():
    make_notes(3)
    err = io.StringIO()
    call_command("fluvius_rebuild", "test-notes.note", stdout=io.StringIO(), stderr=err)
    assert err.getvalue().splitlines() == [
        line for line in err.getvalue().splitlines() if line.startswith("test-notes.note: done, 9/9 events")]
    assert len(err.getvalue().splitlines()) == 1


def test_on_a_terminal_a_live_line_redrawn_in_place():
    make_notes(12, edits=1)
    main, secondary = pty.openpty()
    terminal = os.fdopen(secondary, "w")
    try:
        assert terminal.isatty()
        call_command("fluvius_rebuild", "test-notes.note", "--batch-size", "2", stdout=io.StringIO(),
                     stderr=terminal)
        terminal.flush()
        chunks = []
        while select.select([main], [], [], 0.5)[0]:  # a pty hands its output over in pieces
            chunks.append(os.read(main, 65536))
        shown = b"".join(chunks).decode()
    finally:
        terminal.close()
        os.close(main)
    shown = shown.replace("\r\n", "\n")  # the terminal's own newline translation
    live, done = shown.rstrip("\n").split("\n")
    frames = [frame for frame in live.split("\r") if frame]
    assert len(frames) >= 2, shown  # drawn at once, then redrawn in place at the end
    assert frames[0].startswith("test-notes.note [") and "ETA" in frames[0]
    assert "100% 24/24 events, 12 aggregates" in frames[-1]
    assert done.startswith("test-notes.note: done, 24/24 events, 12 aggregates in ")
