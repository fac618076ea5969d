"""What the built wheel and sdist must hold, checked against the repository.

``python scripts/wheel_contents.py DIST_DIR`` prints every problem and exits 1 if
there is one; ``tests/test_packaging.py`` calls ``problems()`` on a fresh build.

The rule is "every file of the package that git tracks is in the wheel, and
nothing else is": a template, migration or static file added to the repository
but left out of ``package-data`` would pass every test run from the checkout and
break only for users who install the wheel.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "django_fluvius"
# Must never ship: they need the repository's services and settings.
FORBIDDEN_TOPS = ("tests/", "example_project/", "bench/", "docs/", "scripts/")


def tracked_package_files() -> set[str]:
    out = subprocess.run(["git", "ls-files", PACKAGE], cwd=ROOT, check=True, capture_output=True, text=True)
    return {line for line in out.stdout.splitlines() if not line.endswith((".pyc", ".pyo"))}


def package_version() -> str:
    namespace: dict[str, object] = {}
    for line in (ROOT / PACKAGE / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            exec(line, namespace)  # noqa: S102 - our own one-line assignment
    return str(namespace["__version__"])


def wheel_problems(wheel: Path) -> list[str]:
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode() if (
            f"{dist_info}/entry_points.txt" in names) else ""
    content = {n for n in names if not n.startswith(dist_info + "/")}
    missing = sorted(tracked_package_files() - content)
    if missing:
        problems.append(f"wheel lacks package files git tracks (package-data?): {missing}")
    extra = sorted(n for n in content if not n.startswith(PACKAGE + "/"))
    if extra:
        problems.append(f"wheel holds files outside {PACKAGE}/: {extra[:10]}")
    untracked = sorted(content - tracked_package_files())
    if untracked:
        problems.append(f"wheel holds files git does not track (stale build/?): {untracked[:10]}")
    for required in (f"{PACKAGE}/py.typed", f"{PACKAGE}/migrations/0001_initial.py"):
        if required not in content:
            problems.append(f"wheel lacks {required}")
    if not any(n.startswith(f"{PACKAGE}/templates/") for n in content):
        problems.append("wheel holds no templates")
    plugin = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]["fluvius"]
    if f"fluvius = {plugin}" not in entry_points or "[pytest11]" not in entry_points:
        problems.append(f"wheel does not register the pytest11 entry point 'fluvius = {plugin}'")
    elif f"{plugin.replace('.', '/')}.py" not in content:
        problems.append(f"the pytest plugin {plugin} is not in the wheel")
    if metadata["Version"] != package_version():
        problems.append(f"wheel version {metadata['Version']} is not __version__ {package_version()}")
    requires = metadata.get_all("Requires-Dist") or []
    core = [r for r in requires if "extra ==" not in r]
    if not any(r.replace(" ", "").startswith("psycopg>=") for r in core) or any("binary" in r for r in core):
        problems.append(f"the core must require plain psycopg (binary only in an extra): {core}")
    extras = set(metadata.get_all("Provides-Extra") or [])
    if not {"postgres", "redis", "s3"} <= extras:
        problems.append(f"extras postgres, redis and s3 expected, found {sorted(extras)}")
    return problems


def sdist_problems(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as archive:
        names = [n.split("/", 1)[1] for n in archive.getnames() if "/" in n]
    problems = []
    shipped = [n for n in names if n.startswith(FORBIDDEN_TOPS)]
    if shipped:
        problems.append(f"sdist ships repository-only files: {shipped[:10]}")
    for required in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", f"{PACKAGE}/py.typed"):
        if required not in names:
            problems.append(f"sdist lacks {required}")
    missing = sorted(tracked_package_files() - set(names))
    if missing:
        problems.append(f"sdist lacks package files git tracks: {missing}")
    return problems


def problems(dist: Path) -> list[str]:
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"expected one wheel and one sdist in {dist}, found {wheels + sdists}"]
    return wheel_problems(wheels[0]) + sdist_problems(sdists[0])


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]))
    for problem in found:
        print(f"wheel-check: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    print("wheel-check: wheel and sdist hold the package, its data and nothing else")
