"""Runs tests/e2e/run.sh where a Docker engine and kind are available; skipped elsewhere."""

import shutil
import subprocess
from pathlib import Path

import pytest


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(not (_docker_engine() and shutil.which("kind") and shutil.which("helm")),
                    reason="needs a Docker engine, kind and helm")
def test_kind_end_to_end():
    script = Path(__file__).with_name("run.sh")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Ready" in result.stdout
