"""`streamops install` on a machine where everything is installed does nothing."""

from __future__ import annotations

import subprocess
import sys

from streamops.config import PROJECT_ROOT


def test_rerunning_install_changes_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamops", "install"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout
    assert "Debian packages: all present" in output
    assert "Python packages (airflow): up to date" in output
    assert "Python packages (spark): up to date" in output
    assert output.count("jars: present in") == 2
    # The only command it runs is its own second phase inside the venv: no apt, pip or mvn.
    commands = [line for line in output.splitlines() if line.startswith("[streamops install] $ ")]
    assert len(commands) == 1 and "--phase jars" in commands[0], commands
