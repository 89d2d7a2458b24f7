"""Run a test module's ``multidevice`` cases in a fresh process with 8 simulated CPU devices.

``XLA_FLAGS=--xla_force_host_platform_device_count=8`` only takes effect before jax starts, so the
cases run in a child pytest; in the parent process they are skipped with a pointer to this run.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax

EIGHT = jax.device_count() >= 8


def run_multidevice_cases(test_file: str, expected_passed: int) -> None:
    """Run ``test_file -k multidevice`` on 8 devices; assert exactly ``expected_passed`` passed."""
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "pytest", test_file, "-q", "-x", "-k", "multidevice"]
    command += ["-p", "no:cacheprovider", "-p", "no:randomly"]
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    report = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) == expected_passed, report
    assert "skipped" not in result.stdout, report
