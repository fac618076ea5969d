"""The example project's systemd units are valid units (``systemd-analyze verify``).

Each unit is verified as installed on this machine: the paths of the production
layout (/srv/fluvius/venv, /srv/fluvius/app, /etc/fluvius/env) point at this
checkout, its venv and the env example, so systemd checks every key, every
section and that each ``ExecStart`` binary exists and is executable. Any warning
(an unknown key is only a warning to systemd) fails the test.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "example_project" / "deploy" / "systemd"


def test_the_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (systemd)")
    venv = Path(sys.executable).parent.parent
    names = []
    for unit in sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.target")):
        text = (unit.read_text().replace("/srv/fluvius/venv", str(venv)).replace("/srv/fluvius/app", str(ROOT))
                .replace("/etc/fluvius/env", str(UNITS / "env.example"))
                .replace("User=fluvius", "User=root").replace("Group=fluvius", "Group=root"))
        name = unit.name.replace("@.service", "@celery.service")  # the template, instantiated
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    assert {"./fluvius-web.service", "./fluvius-relay.service", "./fluvius-worker@celery.service",
            "./fluvius-beat.service", "./fluvius.target"} <= set(names)
    result = subprocess.run([analyze, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True,
                            env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
