"""What the package says about itself matches what CI runs and what users install."""

import importlib.util
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import django_fluvius

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_supported_versions_are_the_ones_ci_runs():
    classifiers = set(PROJECT["classifiers"])
    pythons = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith("Programming Language :: Python :: 3.")}
    djangos = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith("Framework :: Django :: ")}
    assert pythons == {"3.11", "3.12"}
    assert djangos == {"5.2", "6.0", "6.1"}
    assert PROJECT["requires-python"] == ">=3.11"
    assert any(dep.startswith("Django>=5.2,<6.2") for dep in PROJECT["dependencies"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/find-python 3.12" in ci and 'PIP_EXTRA_ARGS="Django>=6.0,<6.2"' in ci


def test_typed_and_the_pytest_plugin_is_registered():
    assert (ROOT / "django_fluvius" / "py.typed").exists()
    assert PROJECT["entry-points"]["pytest11"] == {"fluvius": "django_fluvius.testing.pytest_plugin"}
    installed = {e.name: e.value for e in metadata.entry_points(group="pytest11")}
    assert installed.get("fluvius") == "django_fluvius.testing.pytest_plugin"
    extras = PROJECT["optional-dependencies"]
    assert {"postgres", "redis", "s3", "docs", "bench", "typing"} <= set(extras)
    assert "django-fluvius[postgres,redis,s3,docs,bench,typing]" in extras["dev"]


def test_the_version_is_written_once_and_installed_as_written():
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]
    assert django_fluvius.__version__ == metadata.version("django-fluvius")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = django_fluvius.__version__
    # A released version has its entry; a development one (X.Y.Z.devN) collects under [Unreleased].
    assert f"## [{version}]" in changelog or (".dev" in version and "## [Unreleased]" in changelog)
    # The quickstart installs the wheel by its file name: the one `python -m build` writes now.
    quickstart = (ROOT / "docs" / "quickstart.md").read_text()
    assert f"dist/django_fluvius-{django_fluvius.__version__}-py3-none-any.whl" in quickstart


def test_a_library_requires_plain_psycopg():
    core = [d.replace(" ", "") for d in PROJECT["dependencies"]]
    assert "psycopg>=3.1" in core and not any("binary" in d for d in core)
    assert PROJECT["optional-dependencies"]["postgres"] == ["psycopg[binary]>=3.1"]
    assert PROJECT["optional-dependencies"]["mysql"] == ["mysqlclient>=2.2"]  # MariaDB / MySQL


def test_every_name_the_docs_import_from_the_package_is_there():
    """Also the blocks the docs tests do not run (bash sessions, README, excerpts)."""
    names = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for group in re.findall(r"from django_fluvius import \(?([\w ,\n]+?)\)?(?:\n|$|#)", page.read_text()):
            names |= {n.strip() for n in group.replace("\n", ",").split(",") if n.strip()}
    assert {"Projection", "Aggregate", "Domain"} <= names
    missing = sorted(n for n in names if n not in django_fluvius.__all__ or not hasattr(django_fluvius, n))
    assert not missing, f"the docs import these from django_fluvius, which has no such name: {missing}"


@pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="needs the dev extra's 'build'")
def test_the_built_wheel_holds_the_app_its_data_and_nothing_else(tmp_path):
    """The content rules of scripts/wheel-check, on a fresh build (the install is the script's)."""
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)], check=True,
                   capture_output=True)
    spec = importlib.util.spec_from_file_location("wheel_contents", ROOT / "scripts" / "wheel_contents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.problems(tmp_path) == []

    # The same wheel with its templates dropped (package-data forgotten) fails the check.
    import zipfile

    [wheel] = tmp_path.glob("*.whl")
    broken = tmp_path / "broken" / wheel.name
    broken.parent.mkdir()
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            if "/templates/" not in item.filename:
                target.writestr(item, source.read(item))
    [problem] = [p for p in module.wheel_problems(broken) if "lacks package files" in p]
    assert "django_fluvius/templates/admin/django_fluvius/projections.html" in problem
