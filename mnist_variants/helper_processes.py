"""Helper processes on other cores: started from a few modules' source in a plain interpreter, read with a limit on
silence, ended with everything they started.

Why its own module: how a helper is started, read, reaped and killed does not depend on what it computes (PNGs
today, `png_encoder`); its one reason to change is the life of a child process on the platforms we run on. It
imports nothing from this package.

Why a plain interpreter: `multiprocessing` or a `ProcessPoolExecutor` with the parent's import state needs `fork`
(unsafe once TensorFlow's threads run) or `spawn`/`forkserver`, which import the caller's `__main__` again: a
user's training script without an `if __name__ == "__main__"` guard would start training in the child; it also
pickles every batch both ways. So a helper is `sys.executable -I -c` handed a program (`program`: the source of
the modules it needs, read once at the parent's import) and the parent's `sys.path` (its own working directory
last, so a `queue.py` there shadows nothing), fed raw bytes on stdin. It imports neither TFDS nor this package's
`__init__` nor the caller's `__main__`.

Each helper runs in a session of its own and is ended by SIGKILL to its process group: a wrapper that does not
exec (`conda run`) leaves the interpreter its child, which must end with it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from typing import IO, Any

# A helper that sends nothing for this long while it owes an answer is killed: the PNG helpers answer within
# milliseconds, so only a stopped or hung helper (or a starved machine) gets near it.
STALL_SECONDS = 60.0
EXIT_SECONDS = 10.0  # how long a helper that closed its output may take to exit
READ_AHEAD = 1 << 20  # the most read from a helper's output at a time, and the size asked of its pipes

# Run first by every program (see `program`): installs a module from its source under its own name. Its package is
# an empty stand-in, so that the package's __init__ (which imports TFDS) never runs in a helper and a module that
# imports anything else of the package fails at start (the parent then does the work itself, with a note).
_INSTALL = """
import sys as _sys
import types as _types


def _install(name, filename, source):
    package, _, short = name.rpartition(".")
    if package and package not in _sys.modules:
        stand_in = _types.ModuleType(package)
        stand_in.__path__ = []
        _sys.modules[package] = stand_in
    module = _types.ModuleType(name)
    module.__file__ = filename
    _sys.modules[name] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    if package:
        setattr(_sys.modules[package], short, module)
    return module

"""


def program(modules: Sequence[types.ModuleType]) -> bytes | None:
    """A program that installs `modules` in order (each may import those before it) and then holds the last one's
    names, entry functions included; None where a module's source cannot be read.

    The sources are read now, through each module's loader (also from a zipapp or pex): the helper must run the
    code this process runs, even if the files change later.
    """
    parts = [_INSTALL]
    for module in modules:
        source = _source_of(module)
        if source is None:
            return None
        parts.append(f"_module = _install({module.__name__!r}, {module.__file__!r}, {source!r})\n")
    parts.append("globals().update({name: value for name, value in vars(_module).items() if name[:2] != '__'})\n")
    return "".join(parts).encode()


def _source_of(module: types.ModuleType) -> str | None:
    loader = getattr(module, "__loader__", None)
    try:
        return loader.get_source(module.__name__) if loader is not None else None
    except (ImportError, OSError):
        return None


def python_command(program_length: int, entry: str) -> list[str] | None:
    """A plain interpreter that reads a program of `program_length` bytes on stdin, runs it and calls its `entry`;
    None where none can run (frozen applications)."""
    if getattr(sys, "frozen", False) or not sys.executable or sys.platform == "win32":  # select() needs sockets there
        return None
    # The parent's import path, so numpy is found wherever this process found it (pip --target, pex,
    # Bazel runfiles); the working directory last, so modules there cannot shadow the standard library.
    here = {"", _working_directory()}
    path = [entry for entry in sys.path if entry not in here] + [entry for entry in sys.path if entry in here]
    bootstrap = (
        f"import sys; sys.path[:] = {path!r}; source = sys.stdin.buffer.read(int(sys.argv[1])); "
        "namespace = {'__name__': '_mnist_variants_helper'}; "
        f"exec(compile(source, '<mnist_variants helper>', 'exec'), namespace); namespace[{entry!r}]()"
    )
    # -I: no PYTHON* variables, no user site, no working directory on the path before ours is set.
    return [sys.executable, "-I", "-c", bootstrap, str(program_length)]


def _working_directory() -> str:
    """The working directory, or "" where it was removed or cannot be read (a cleaned-up scratch folder)."""
    try:
        return os.getcwd()
    except OSError:
        return ""


def describe_exit(returncode: int | None) -> str:
    """'exit status 3', 'killed by SIGKILL' or 'still running'."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Broken(Exception):
    """A helper broke its promise; the message says how."""


def kill_group(popen: subprocess.Popen) -> None:
    """SIGKILL to the helper's process group (its own session, Process.start): it and whatever it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the whole group has ended already
        os.killpg(popen.pid, signal.SIGKILL)
    if popen.returncode is None:
        with contextlib.suppress(OSError):
            popen.kill()


class Process:
    """A helper process: started from a command, its stderr kept for the message that reports its end."""

    def __init__(self, role: str, popen: subprocess.Popen, stderr: IO[bytes]) -> None:
        self.role, self.popen, self._stderr = role, popen, stderr

    @classmethod
    def start(cls, role: str, command: list[str] | None) -> Process | None:
        """The running process, or None if it cannot be started here."""
        if command is None:
            return None
        stderr = tempfile.TemporaryFile()
        try:
            # A session of its own: a wrapper that does not exec (conda run) leaves the interpreter its child,
            # which kill_group ends with it.
            popen = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True
            )
        except (OSError, ValueError):
            stderr.close()
            return None
        for pipe in (popen.stdin, popen.stdout):
            _enlarge_pipe(pipe.fileno())
        return cls(role, popen, stderr)

    def feed(self, source: bytes, inputs: queue.SimpleQueue, write: Callable[[IO[bytes], Any], None]) -> None:
        """Writes the source, then `write(stdin, item)` for each input until None; stops quietly if the process
        is gone (the thread reading its output reports that)."""
        stdin = self.popen.stdin
        try:
            stdin.write(source)
            stdin.flush()
            while (item := inputs.get()) is not None:
                write(stdin, item)
                stdin.flush()
        except (OSError, ValueError):
            while inputs.get() is not None:  # what is queued for a dead process must not stay in memory
                pass
        finally:
            try:
                stdin.close()
            except (OSError, ValueError):
                pass

    def greeted(self, reader: Reader, greeting: bytes) -> None:
        """Reads its greeting; Broken if it ends or says anything else first."""
        said = reader.read(len(greeting), allow_end=True)
        if said is None:
            raise Broken("did not start (it ended before its greeting)")
        if said != greeting:
            raise Broken(f"did not start (it sent {said!r}, not its greeting)")

    def describe(self, what: str) -> str:
        return f"{self.role} (pid {self.popen.pid}, {describe_exit(self.popen.poll())}) {what}"

    def end(self, what: str) -> str:
        """Kills it if it still runs and reaps it; returns what happened, naming it and its exit status."""
        if self.popen.poll() is None:
            try:
                self.popen.wait(0.5)  # it may be exiting on its own: then its own status is the news
            except subprocess.TimeoutExpired:
                kill_group(self.popen)
                self.popen.wait()
        kill_group(self.popen)  # what it started, if it exited on its own and left them
        self.popen.stdout.close()
        said = self._stderr_tail()
        self._stderr.close()
        return self.describe(what) + (f"; its stderr ends: {said}" if said else "")

    def finish(self) -> None:
        """After a clean end of its output: reaped, its pipes closed."""
        self.popen.stdout.close()
        self._stderr.close()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        return self._stderr.read().decode(errors="replace").strip()


def give_up_on(process: Process, what: str, instead: str, fall_back: Callable[[], None], quiet: bool = False) -> None:
    """Ends a failed helper, says so and what happens instead, then calls `fall_back`. The note first, so that
    it is out before the consumers go on; they go on whatever happens to it. `quiet`: ended on purpose."""
    try:
        ended = process.end(what)
        if not quiet:
            note(f"{ended}\n{instead}")
    finally:
        fall_back()


def note(text: str) -> None:
    """Says on stderr what changed; a closed or broken stderr (`... 2>&1 | head`) changes nothing else."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class Reader:
    """Exact reads from a helper's output, with a limit on silence while it owes an answer.

    It reads ahead, up to READ_AHEAD bytes a call, from a pipe made as large (`Process.start`): a message
    then takes one wake-up of the reading thread instead of one per 64 KiB, and each wake-up waits for the
    GIL that TFDS's writer holds. With 1,024 PNGs a message (4,096 since, see png_protocol.BATCH), that writer waited
    for the GIL 12,700 times in a full-size EMNIST byclass prepare, and the thread reading the helper's output woke
    13,000 times (2026-11-26).
    """

    def __init__(self, fd: int, stall_seconds: float, owes: Callable[[], bool]) -> None:
        self._fd, self._stall_seconds, self._owes = fd, stall_seconds, owes
        self._ahead = bytearray()  # read, not yet asked for

    def read(self, size: int, allow_end: bool = False) -> bytes | None:
        """Exactly `size` bytes; None at a clean end of output if `allow_end`; else Broken."""
        # The silence that counts starts at the last byte read, or later, when an answer became owed: looked
        # at a few times per limit, so a request made just before a limit ran out is given a whole one.
        silent_since = time.monotonic()
        while len(self._ahead) < size:
            ready, _, _ = select.select([self._fd], [], [], min(1.0, self._stall_seconds / 4))
            if not ready:
                if not self._owes():
                    silent_since = time.monotonic()
                elif time.monotonic() - silent_since >= self._stall_seconds:
                    raise Broken(f"sent nothing for {self._stall_seconds:g} s while it owed an answer; killed")
                continue
            silent_since = time.monotonic()
            part = os.read(self._fd, max(size - len(self._ahead), READ_AHEAD))
            if not part:
                if not self._ahead and allow_end:
                    return None
                raise Broken(f"ended its output {len(self._ahead)} bytes into a {size}-byte read")
            self._ahead += part
        data = bytes(self._ahead[:size])
        del self._ahead[:size]
        return data


def _enlarge_pipe(fd: int) -> None:
    """Makes the pipe at `fd` hold READ_AHEAD bytes where Linux lets it (fs.pipe-max-size); else leaves it.

    Both ways: at 64 KiB, the 12.8 MB of a submission crossed in 200 pieces, each a wake-up of the helper on
    another core and of the thread writing to it (in a VM, each wake-up on another core costs an interrupt).
    """
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ_AHEAD)
    except (ImportError, AttributeError, OSError):  # not Linux, not a pipe, or above the limit: 64 KiB it is
        pass
