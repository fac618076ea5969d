"""The benchmark report: every benchmark still runs (--quick), and the report is right.

The smoke run is slow-ish (each benchmark sets up a PostgreSQL database of its own):
it is marked ``bench`` (``pytest -m "not bench"`` leaves it out) and ``postgres``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run_all

ROOT = Path(__file__).resolve().parent.parent


def test_discover_finds_every_module_with_a_main():
    names = run_all.discover()
    expected = sorted(p.stem for p in (ROOT / "bench").glob("*.py")
                      if p.stem not in run_all.NOT_BENCHMARKS and "\ndef main(" in p.read_text())
    assert names == expected and "core" in names
    assert "common" not in names and "run_all" not in names


def test_targets_and_ratios_are_read_from_figure_names():
    assert run_all.target_of("framework / raw (target >= 0.7)") == (">=", 0.7)
    assert run_all.target_of("rebuild events/s (median, target >= 20,000)") == (">=", 20000.0)
    assert run_all.target_of("admin / raw SQL") is None
    assert run_all.is_ratio("command / plain (target <= 1.5)")
    assert not run_all.is_ratio("load seconds (COPY / executemany)")
    results = [{"name": "x", "ok": True, "figures": {"a / b (target <= 1.5)": 2.0, "c/s (target >= 10)": 11}}]
    assert [(c["figure"], c["met"]) for c in run_all.checks(results)] == [
        ("a / b (target <= 1.5)", False), ("c/s (target >= 10)", True)]


def test_report_table_plot_and_docs_section(tmp_path, monkeypatch):
    results = [
        {"name": "core", "ok": True, "seconds": 3.2, "lines": ["200 users"],
         "machine": {"django": "5.2", "database": "postgresql 150020"},
         "figures": {"framework commands/s (median)": 900.5, "framework / raw (target >= 0.7)": 0.72}},
        {"name": "broken", "ok": False, "error": "exit status 1"},
    ]
    meta = {"finished": "today", "command": "python -m bench", "quick": False,
            "environment": run_all.environment(results)}
    assert meta["environment"]["database"] == "PostgreSQL 15.20"
    text = run_all.markdown(results, meta, "img/benchmarks.png")
    assert "| core | framework / raw (target >= 0.7) | 0.72 | >= 0.7 | yes |" in text
    assert "| framework commands/s (median) | 900 |" in text
    assert "Failed: exit status 1" in text and "- 200 users" in text
    assert "![Ratios of each benchmark to its baseline](img/benchmarks.png)" in text

    image = tmp_path / "plot.png"
    assert run_all.plot(results, image)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    page = tmp_path / "benchmarks.md"
    page.write_text(f"# B\n\nintro\n\n{run_all.START}\nold\n{run_all.END}\n\nafter\n")
    monkeypatch.setattr(run_all, "DOCS_PAGE", page)
    monkeypatch.setattr(run_all, "DOCS_IMAGE", tmp_path / "img" / "benchmarks.png")
    run_all.update_docs(text, image)
    updated = page.read_text()
    assert "old" not in updated and "intro" in updated and updated.endswith("after\n")
    assert "| core | framework / raw" in updated
    assert (tmp_path / "img" / "benchmarks.png").exists()


def test_docs_page_has_the_section_the_report_fills():
    text = run_all.DOCS_PAGE.read_text()
    assert text.index(run_all.START) < text.index(run_all.END)


@pytest.mark.bench
@pytest.mark.postgres
def test_every_benchmark_runs_quick(tmp_path):
    env = {**os.environ, "BENCH_POSTGRES_URL": os.environ["DATABASE_URL"],
           "BENCH_DB_PREFIX": f"{os.environ.get('FLUVIUS_TEST_DB_NAME', 'test')}_quick_"}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["name"] for r in report["results"]] == run_all.discover()
    for result in report["results"]:
        assert result["ok"], result
        assert result["figures"] and all(isinstance(v, int | float) for v in result["figures"].values()), result
    assert (tmp_path / "report.md").read_text().startswith("# Benchmark report")
    assert (tmp_path / "report.png").exists()


@pytest.mark.bench
@pytest.mark.mysql
def test_the_core_benchmark_runs_quick_on_mariadb(tmp_path):
    from urllib.parse import urlsplit

    url = urlsplit(os.environ["DATABASE_URL"])
    env = {**os.environ, "BENCH_MARIADB_URL": f"mysql://{url.netloc}/test",
           "BENCH_DB_PREFIX": f"{os.environ.get('FLUVIUS_TEST_DB_NAME', 'test')}_quick_"}
    done = subprocess.run([sys.executable, "-m", "bench.core", "--mariadb", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "raw mysqlclient commands/s" in done.stdout and "default / raw" in done.stdout
    assert "CPU: raw / default" in done.stdout
