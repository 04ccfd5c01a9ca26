"""Processes a test starts and watches while they run (imported by tests as `workers.watched`).

Output goes to files, so a test can wait for a line while the process runs; every wait is
bounded, and `stop` kills what is still running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKERS = Path(__file__).resolve().parent
DEADLINE_SECONDS = 240  # for one process; preparing workers normally take 10-30 s, lock workers 1-3 s


class Watched:
    """A process whose stdout and stderr go to files in `folder`."""

    def __init__(self, folder: Path, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        self.out_path, self.err_path = folder / f"{name}.out", folder / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=folder
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, seconds: float = DEADLINE_SECONDS) -> None:
        """Until `text` is in its stdout; fails the test if it ends or the time is up first."""
        deadline = time.monotonic() + seconds
        while text not in self.out:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"no {text!r} from {self.process.args}:\n{self.out[-3000:]}\n{self.err[-3000:]}")
            time.sleep(0.05)

    def finish(self, seconds: float = DEADLINE_SECONDS) -> int:
        """Its exit status; fails the test if it still runs after `seconds`."""
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"still running after {seconds} s:\n{self.out[-3000:]}\n{self.err[-3000:]}")

    def result(self) -> dict:
        """What a prepare_worker.py printed last (`RESULT {json}`), once it ended well."""
        status = self.finish()
        lines = [line for line in self.out.splitlines() if line.startswith("RESULT ")]
        assert status == 0 and lines, f"{self.out[-3000:]}\n{self.err[-3000:]}"
        return json.loads(lines[-1].removeprefix("RESULT "))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def prepare_command(name: str, data_dir: Path, *options: str, faults: tuple[str, ...] = ()) -> list[str]:
    """prepare_worker.py preparing `name` into `data_dir`, under faults.py with `faults` if any."""
    under = [str(WORKERS / "faults.py"), *faults] if faults else []
    return [sys.executable, *under, str(WORKERS / "prepare_worker.py"), name, "--data_dir", str(data_dir), *options]


def generated_files(builder_cls, folder: Path, counts: dict[str, int]) -> dict[str, bytes]:
    """Upstream-format files with `counts` generated examples per split, written to `folder`; by name."""
    import testing

    paths = testing.write_upstream_files(builder_cls, folder, counts, seed=3)
    return {name: path.read_bytes() for name, path in paths.items()}
