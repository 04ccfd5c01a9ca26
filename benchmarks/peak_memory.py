"""Peak resident memory of a process, as Linux counts it for that process alone: VmHWM of /proc/PID/status.

Not getrusage's ru_maxrss: Linux carries it across exec. `subprocess` starts a child with vfork+exec, so
the child's ru_maxrss starts at its parent's peak (seen: every prepare child of `--datasets qmnist` reported
1191.16 MiB, the peak of the parent that had generated the QMNIST files; a loaders child 1,668 MB against its
VmHWM's 735 MB). RUSAGE_CHILDREN's ru_maxrss is the largest of those inherited figures. VmHWM is the peak of
the process's own address space, which exec replaces, so it starts afresh.

Run as a script, this module is the wrapper that measures a command the benchmark does not write itself
(`tfds build`): it runs a Python module as `__main__` in its own process and, as that process ends, writes
the process's VmHWM and CPU seconds (its own and its reaped children's: our PNG helper and checker) to a JSON
file:

    python benchmarks/peak_memory.py OUT.json MODULE [ARG ...]

A wrapper rather than polling /proc/PID/status from outside: polling misses whatever peak comes after its
last read, and once the process has exited its status has no VmHWM left to read (the memory is gone).

Standard library only: torchvision's QMNIST child, in a venv of its own, imports it too.
"""

from __future__ import annotations

import json
import resource
import runpy
import subprocess
import sys
from pathlib import Path


def status_mib(field: str, pid: int | str = "self") -> float:
    """A memory field of /proc/PID/status (VmRSS: now, VmHWM: peak), in MiB (Linux only, as the benchmarks are)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # the kernel writes kB (KiB)
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def peak_mib(pid: int | str = "self") -> float:
    """Peak resident memory of the process (VmHWM), in MiB."""
    return status_mib("VmHWM", pid)


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have been waited for (CPU times, unlike ru_maxrss, start
    at zero in a new process)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + children_cpu_seconds()


def run_measured(module: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Runs `python -m module args` through this wrapper in a fresh process; returns its peak resident memory
    (`peak_rss_mib`, VmHWM) and `cpu_seconds` (with its children's). Raises with the end of its stderr if it fails."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="peak_memory_") as scratch:
        out = Path(scratch) / "figures.json"
        command = [sys.executable, __file__, str(out), module, *args]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{module} {args} failed (exit status {result.returncode}):\n{result.stderr[-5000:]}")
        return json.loads(out.read_text())


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit:  # absl's app.run ends with sys.exit(0), as most CLIs do
        if exit.code not in (None, 0):
            raise
    Path(out).write_text(json.dumps({"peak_rss_mib": peak_mib(), "cpu_seconds": cpu_seconds()}))


if __name__ == "__main__":
    main()
