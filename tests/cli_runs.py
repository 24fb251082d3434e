"""`dpr-hf` commands run in a subprocess as a user runs them, and killed mid-run (the kill/resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds for one run of a tiny model, or for its first checkpoint to appear


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dpr_hf.cli", *args]


def subprocess_env(**overrides: str) -> dict[str, str]:
    # One thread per process: tiny models gain nothing from more, equal thread counts keep results bitwise equal,
    # and on a shared 2-core machine two threads per process fight the other jobs and run ~10x slower.
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        **overrides,
    }


def run_cli(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `command` to the end; asserts that it succeeded (its stderr's tail is the message)."""
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def kill_once_written(command: list[str], marker: Path, env: dict[str, str]) -> None:
    """Start `command` and SIGKILL it as soon as `marker` (a checkpoint file) exists.

    Asserts that the kill is what ended it (it neither finished nor failed first) and that `marker` was written.
    """
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a full pipe would stall the run
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + TIMEOUT
        while not marker.exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-2000:]
    assert process.returncode == -signal.SIGKILL, f"the run ended by itself before the kill:\n{tail}"
    assert marker.exists(), f"{marker} was not written within {TIMEOUT} s:\n{tail}"


def resume(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `command --resume` to the end; asserts that it succeeded and resumed from a checkpoint."""
    result = run_cli([*command, "--resume"], env)
    assert "resumed from" in result.stdout + result.stderr
    return result
