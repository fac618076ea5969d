"""What the package says about itself matches what CI runs and what users install."""

import tomllib
from importlib import metadata
from pathlib import Path

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
    assert {"docs", "bench", "typing"} <= set(extras)
    assert "django-fluvius[docs,bench,typing]" in extras["dev"]
