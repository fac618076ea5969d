"""Run every benchmark of bench/ and write one report: a Markdown table and a plot.

    .venv/bin/python -m bench                      # every benchmark, default sizes (takes a while)
    .venv/bin/python -m bench --quick              # a smoke run of each (the test suite does this)
    .venv/bin/python -m bench --only core,query    # some of them
    .venv/bin/python -m bench --docs               # also put the results into docs/benchmarks.md

A benchmark is a module ``bench/<name>.py`` with ``main(argv=None) -> dict``. Each
runs in a child process of its own (each sets Django up on a database of its own)
and returns its figures: the subject, the baseline measured in the same run, and
their ratio. Figures named ``... (target <= X)`` / ``(target >= X)`` are checked
against their target. The report (``report.md``, ``report.json``, ``report.png``)
goes to ``bench/results/`` (or ``--out``), with the machine and versions.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
DOCS_IMAGE = ROOT / "docs" / "img" / "benchmarks.png"
NOT_BENCHMARKS = {"__init__", "__main__", "common", "settings", "run_all", "rest_wsgi"}
START, END = "<!-- bench-report:start -->", "<!-- bench-report:end -->"

TARGET = re.compile(r"target\s*(<=|>=|<|>)\s*([\d,_.]+)")
COMPARE = {"<=": lambda v, t: v <= t, ">=": lambda v, t: v >= t, "<": lambda v, t: v < t,
           ">": lambda v, t: v > t}


def discover() -> list[str]:
    """Modules of bench/ that define ``main`` (found by reading them, not importing them)."""
    names = []
    for path in sorted(BENCH.glob("*.py")):
        if path.stem in NOT_BENCHMARKS:
            continue
        tree = ast.parse(path.read_text(), str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            names.append(path.stem)
    return names


def target_of(name: str) -> tuple[str, float] | None:
    m = TARGET.search(name)
    if m is None:
        return None
    return m.group(1), float(m.group(2).replace(",", "").replace("_", ""))


UNITS = re.compile(r"\b(ms|s|seconds|MB|MiB|events/s|commands/s|rows)\b|/s\b")


def is_ratio(name: str) -> bool:
    """A ratio compares a subject with its baseline: 'subject / baseline', with no unit in its name."""
    return " / " in name and UNITS.search(name) is None


# -- running ------------------------------------------------------------------------------


def run_child(name: str, out: Path, args: list[str]) -> None:
    """In the child process: run one benchmark's main() and write what it returned."""
    import importlib

    from bench import common

    started = time.perf_counter()
    figures = importlib.import_module(f"bench.{name}").main(args)
    result: dict[str, Any] = {"figures": figures, "seconds": time.perf_counter() - started}
    try:
        result["machine"] = common.machine()
    except Exception as exc:  # noqa: BLE001 - informational
        result["machine"] = {"error": str(exc)}
    saved = RESULTS / f"{name}.json"
    if saved.exists() and saved.stat().st_mtime >= time.time() - result["seconds"] - 1:
        result["lines"] = json.loads(saved.read_text()).get("lines", [])
    out.write_text(json.dumps(result, default=str))


def run_one(name: str, args: list[str], timeout: float | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.run_all", "--child", name, "--child-out", str(out), "--", *args]
        print(f"\n>> {name}: {' '.join(cmd[2:])}", flush=True)
        started = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"name": name, "ok": False, "error": f"timed out after {timeout:.0f} s"}
        if done.returncode != 0 or not out.exists():
            return {"name": name, "ok": False, "error": f"exit status {done.returncode}",
                    "seconds": time.perf_counter() - started}
        result = json.loads(out.read_text())
    return {"name": name, "ok": True, **result}


# -- reporting ------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def checks(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every figure that carries a target, with whether it was met."""
    found = []
    for result in results:
        for figure, value in (result.get("figures") or {}).items():
            target = target_of(figure)
            if target is not None and isinstance(value, int | float):
                op, limit = target
                found.append({"benchmark": result["name"], "figure": figure, "value": value,
                              "target": f"{op} {fmt(limit)}", "met": COMPARE[op](value, limit)})
    return found


def environment(results: list[dict[str, Any]]) -> dict[str, str]:
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpus": str(os.cpu_count())}
    for result in results:
        env.update({k: v for k, v in (result.get("machine") or {}).items() if k in {"django", "database"}})
        if "database" in env:
            break
    # PostgreSQL reports its version as a number: 150020 is 15.20.
    m = re.fullmatch(r"postgresql (\d+)", env.get("database", ""))
    if m:
        number = int(m.group(1))
        env["database"] = f"PostgreSQL {number // 10000}.{number % 10000}"
    return env


def markdown(results: list[dict[str, Any]], meta: dict[str, Any], image: str | None) -> str:
    env = meta["environment"]
    lines = [
        f"Run {meta['finished']} with `{meta['command']}` "
        f"({'quick smoke run: sizes too small to mean anything' if meta['quick'] else 'full sizes'}).",
        "",
        f"Machine: {env.get('platform')}, {env.get('cpus')} CPUs; Python {env.get('python')}, "
        f"Django {env.get('django', '?')}, {env.get('database', '?')}.",
        "",
        "### Targets",
        "",
        "| benchmark | figure | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    for check in checks(results):
        lines.append(f"| {check['benchmark']} | {check['figure']} | {fmt(check['value'])} | "
                     f"{check['target']} | {'yes' if check['met'] else '**no**'} |")
    if image:
        lines += ["", f"![Ratios of each benchmark to its baseline]({image})"]
    lines += ["", "### Every figure", ""]
    for result in results:
        seconds = result.get("seconds")
        took = f" ({seconds:.0f} s)" if isinstance(seconds, int | float) else ""
        lines.append(f"#### {result['name']}{took}")
        lines.append("")
        if not result["ok"]:
            lines += [f"Failed: {result.get('error')}", ""]
            continue
        for line in result.get("lines") or []:
            lines.append(f"- {line}")
        if result.get("lines"):
            lines.append("")
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in (result.get("figures") or {}).items()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    """A horizontal bar per ratio (subject / baseline), its target marked; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'django-fluvius[bench]'): no plot.", file=sys.stderr)
        return False
    bars = [(f"{r['name']}: {k}", float(v), target_of(k)) for r in results if r["ok"]
            for k, v in (r.get("figures") or {}).items() if is_ratio(k) and isinstance(v, int | float)]
    if not bars:
        return False
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(bars) + 1.2))
    labels = [re.sub(r"\s*\(target[^)]*\)", "", name) for name, _, _ in bars]
    colors = []
    for _, value, target in bars:
        if target is None:
            colors.append("#9e9e9e")
        else:
            colors.append("#2e7d32" if COMPARE[target[0]](value, target[1]) else "#c62828")
    y = range(len(bars))
    ax.barh(list(y), [v for _, v, _ in bars], color=colors)
    for i, (_, value, target) in enumerate(bars):
        ax.text(value, i, f" {value:.3g}", va="center", fontsize=8)
        if target is not None:
            ax.plot([target[1], target[1]], [i - 0.4, i + 0.4], color="black", linewidth=1.5)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    ax.set_xlabel("ratio, log scale (black tick: target; green: met, red: missed, grey: no target)")
    ax.set_title("django-fluvius benchmarks: each figure against its same-run baseline", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def update_docs(report_md: str, image_path: Path | None) -> None:
    page = DOCS_PAGE.read_text()
    if START not in page or END not in page:
        raise SystemExit(f"{DOCS_PAGE} has no {START} ... {END} section to fill.")
    if image_path is not None:
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(image_path.read_bytes())
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    DOCS_PAGE.write_text(f"{head}{START}\n{report_md}{END}{tail}")


# -- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run of each benchmark")
    parser.add_argument("--runs", type=int, default=None, help="repetitions, passed to each benchmark")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    parser.add_argument("--docs", action="store_true", help="also update docs/benchmarks.md and its plot")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        run_child(args.child, args.child_out, passthrough)
        return {}
    names = discover()
    if args.list:
        print("\n".join(names))
        return {"benchmarks": names}
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(names)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(names)}")
    selected = [n for n in names if (not only or n in only) and n not in skip]

    child_args = (["--quick"] if args.quick else []) + (["--runs", str(args.runs)] if args.runs else [])
    results = [run_one(name, child_args + passthrough, args.timeout) for name in selected]

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + " ".join(argv + (["--", *passthrough] if passthrough else [])),
        "quick": args.quick,
        "environment": environment(results),
    }
    image = out / "report.png"
    has_plot = plot(results, image)
    (out / "report.json").write_text(json.dumps({"meta": meta, "results": results, "checks": checks(results)},
                                                indent=2, default=str))
    (out / "report.md").write_text("# Benchmark report\n\n" + markdown(results, meta, "report.png" if has_plot
                                                                        else None))
    if args.docs:
        update_docs(markdown(results, meta, "img/benchmarks.png" if has_plot else None),
                    image if has_plot else None)
    failed = [r["name"] for r in results if not r["ok"]]
    missed = [f"{c['benchmark']}: {c['figure']} = {fmt(c['value'])}" for c in checks(results) if not c["met"]]
    print(f"\nReport: {out / 'report.md'}" + (f" and {image}" if has_plot else ""))
    if missed and not args.quick:
        print("Targets missed:\n  " + "\n  ".join(missed))
    if failed:
        print(f"Failed: {', '.join(failed)}", file=sys.stderr)
    return {"results": results, "failed": failed, "missed": missed}


if __name__ == "__main__":
    sys.exit(1 if main().get("failed") else 0)
