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

`run_measured` runs it and also samples the memory of the command's own helper processes, which end before it.

A wrapper rather than polling /proc/PID/status from outside: polling misses whatever peak comes after its
last read, and once the process has exited its status has no VmHWM left to read (the memory is gone).

Standard library only: torchvision's QMNIST child, in a venv of its own, imports it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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


def descendants(pid: int) -> list[tuple[int, int]]:
    """The processes below `pid` now (children, their children...) as (pid, parent's pid), from
    /proc/PID/task/*/children."""
    found, parents = [], [pid]
    while parents:
        parent = parents.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:  # the process or thread ended meanwhile
                continue
            found += [(child, parent) for child in children]
            parents += children
    return found


def helpers_peak_mib(pid: int) -> float:
    """The sum of the VmHWM of the processes below `pid` that run a program of their own, in MiB.

    A child with its parent's command line has not exec'd yet (or is a forked worker): its memory is its
    parent's (shared under vfork, copied under fork, so its VmHWM reads the parent's peak; seen: 1,310 MiB
    "helpers" of a 1,300 MiB `tfds build`); it is left out. So forked workers' own memory is not counted:
    `tfds build --num_processes N` would be under-reported; the benchmarks run it with one process. The
    command line is read before VmHWM: once it is the new program's, exec has replaced the memory that VmHWM
    reads."""
    total = 0.0
    for child, parent in descendants(pid):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() != Path(f"/proc/{parent}/cmdline").read_bytes():
                total += peak_mib(child)
        except (OSError, RuntimeError):  # exited meanwhile: gone, or a zombie whose status has no VmHWM
            pass
    return total


@contextlib.contextmanager
def _ended_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP (`timeout`, a closed terminal, `kill`) raise SystemExit here while within, so that the
    measured command's group is killed on the way out; Python's default for them would end this process at once.
    Only the main thread may set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, end) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_measured(
    module: str, args: list[str], env: dict[str, str] | None = None, every: float = 0.1, timeout: float | None = None
) -> dict:
    """Runs `python -m module args` through this wrapper in a fresh process; returns its peak resident memory
    (`peak_rss_mib`, VmHWM), `cpu_seconds` (with its children's) and `helpers_peak_rss_mib`: the largest sum of
    the VmHWM of its helpers alive at once (`helpers_peak_mib`), sampled every `every` seconds from here (not
    from a thread in the measured process, which would take its CPU and GIL; growth after a helper's last sample
    is missed). Raises with the end of its stderr if it fails; kills it after `timeout` seconds (tests bound it)."""
    with tempfile.TemporaryDirectory(prefix="peak_memory_") as scratch:
        out, log = Path(scratch) / "figures.json", Path(scratch) / "stderr"
        command = [sys.executable, __file__, str(out), module, *args]
        helpers = 0.0
        with log.open("wb") as stderr, _ended_on_termination():  # a file, not a pipe: nothing reads it meanwhile
            # A session of its own: its whole group (helpers included) is killed below, whatever ends it. So a
            # signal to this benchmark's group no longer reaches it: SIGTERM and SIGHUP end this wait instead.
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while True:
                    try:
                        process.wait(every)  # returns as the process ends: the caller's wall time stays exact
                        break
                    except subprocess.TimeoutExpired:
                        helpers = max(helpers, helpers_peak_mib(process.pid))
                    if deadline is not None and time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(command, timeout)
            finally:
                # Ended, timed out or interrupted: nothing of it is left running, not even a helper of a command
                # that exited without ending it (the group's id stays its own while any member lives).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.returncode != 0:
            error = log.read_bytes()[-5000:].decode(errors="replace")
            raise RuntimeError(f"{module} {args} failed (exit status {process.returncode}):\n{error}")
        return {**json.loads(out.read_text()), "helpers_peak_rss_mib": helpers}


def main() -> None:
    if len(sys.argv) < 3 or "-h" in sys.argv[1:3] or "--help" in sys.argv[1:3]:
        print(__doc__.split("\n\n")[0] + "\n\nusage: python benchmarks/peak_memory.py OUT.json MODULE [ARG ...]")
        sys.exit(0 if {"-h", "--help"} & set(sys.argv[1:3]) else 2)
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as ended:  # absl's app.run ends with sys.exit(0), as most CLIs do
        if ended.code not in (None, 0):
            raise
    Path(out).write_text(json.dumps({"peak_rss_mib": peak_mib(), "cpu_seconds": cpu_seconds()}))


if __name__ == "__main__":
    main()
