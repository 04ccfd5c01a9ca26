"""Our PNG writer's bytes are valid PNG: TF and PIL decode them to exactly the input pixels; its helper
process is checked in every way it can die or lie, and starts wherever its parent runs."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import testing
import zlib_ng
from conftest import worker_env
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from workers.watched import Watched, generated_files, prepare_command

from mnist_variants import FashionMnist, helper_processes, png_codec, png_encoder, png_protocol

WORKERS = Path(__file__).resolve().parent / "workers"
FAULTY_HELPER = WORKERS / "png_helper_faults.py"
FAULTY_CHECKER = WORKERS / "png_checker_faults.py"
ANYWHERE = WORKERS / "png_anywhere.py"
PACKAGE = Path(png_encoder.__file__).parent
# What the encoder needs of the package: png_anywhere.py and the zipapp below carry these and nothing else.
ENCODER_MODULES = ("helper_processes.py", "png_codec.py", "png_protocol.py", "png_encoder.py")

images_of_any_size = hnp.arrays(
    np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.integers(0, 255)
)


@settings(max_examples=60, deadline=None)
@given(images_of_any_size)
def test_tf_and_pil_decode_exactly_the_input(image):
    encoded = png_codec.encode_png(image)
    np.testing.assert_array_equal(tf.io.decode_png(encoded, channels=1).numpy()[..., 0], image)
    decoded = Image.open(io.BytesIO(encoded))
    decoded.load()  # PIL checks the chunk CRCs and the zlib stream while loading
    assert decoded.mode == "L" and decoded.size == (image.shape[1], image.shape[0])
    np.testing.assert_array_equal(np.asarray(decoded), image)


def test_chunks_are_well_formed():
    encoded = png_codec.encode_png(testing.synthetic_images(1, seed=1)[0])
    assert encoded.startswith(png_codec.PNG_SIGNATURE)
    position, kinds = len(png_codec.PNG_SIGNATURE), []
    while position < len(encoded):
        (length,) = np.frombuffer(encoded[position : position + 4], ">u4")
        kind = encoded[position + 4 : position + 8]
        payload = encoded[position + 8 : position + 8 + length]
        (crc,) = np.frombuffer(encoded[position + 8 + length : position + 12 + length], ">u4")
        assert crc == zlib.crc32(kind + payload), kind
        kinds.append(kind)
        position += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"] and position == len(encoded)


def test_the_window_is_the_smallest_libpng_would_choose_and_changes_nothing_else():
    # libpng's png_deflate_claim: halve while the data plus 262 bytes fit in half the window.
    assert [png_codec.window_bits(size) for size in (1, 250, 262, 812, 16_384, 10**6)] == [9, 9, 10, 11, 15, 15]
    images = testing.synthetic_images(200, seed=9)[..., 0]
    for encoded, image in zip(png_codec.encode_batch(images), images, strict=True):
        idat = encoded[41:-16]
        assert idat[0] >> 4 == png_codec.window_bits(28 * 29) - 8  # the zlib header's CINFO names the window
        full_window = png_codec.zlib_ng.compress(
            png_codec._scanlines(image[np.newaxis])[0], png_codec.COMPRESSION_LEVEL, 15
        )
        assert idat[2:] == full_window[2:]  # the same deflate stream and checksum as with 2**15


def drain(iterator, seconds: float = 60) -> tuple[list[bytes], BaseException | None]:
    """The PNGs an iterator yields and the error that ends it (in a thread: a consumer left waiting fails)."""
    outcome: dict = {"pngs": [], "error": None}

    def consume() -> None:
        try:
            for data in iterator:
                outcome["pngs"].append(data)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"a consumer still waits after {seconds} s"
    return outcome["pngs"], outcome["error"]


def fake_helper(monkeypatch, mode: str) -> None:
    """The encoder starts tests/workers/png_helper_faults.py MODE in place of its helper."""
    monkeypatch.setattr(
        png_encoder, "_helper_command", lambda length: [sys.executable, str(FAULTY_HELPER), mode, str(length)]
    )


def test_helper_process_keeps_order_across_submissions():
    first, second = testing.synthetic_images(2500, seed=2), testing.synthetic_images(7, seed=3)
    encoder = png_encoder.PngEncoder()
    assert encoder._helper is not None  # the helper process started
    if sys.platform.startswith("linux"):  # both of its pipes hold 1 MiB: fewer wake-ups on either side
        import fcntl

        pipes = (encoder._helper.stdin, encoder._helper.stdout, encoder._checker.popen.stdin)
        assert [fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) for pipe in pipes] == [helper_processes.READ_AHEAD] * 3
    pngs = [encoder.submit(first), encoder.submit(second)]
    encoder.close()
    second_pngs, first_pngs = list(pngs[1]), list(pngs[0])  # consumed out of order on purpose
    assert first_pngs == png_codec.encode_batch(first[..., 0]) and second_pngs == png_codec.encode_batch(second[..., 0])
    assert not encoder._here and encoder._failure is None
    decoded = np.stack([tf.io.decode_png(data).numpy() for data in first_pngs[:300]])
    np.testing.assert_array_equal(decoded, first[:300])
    encoder._helper.wait(30)
    assert encoder._helper.returncode == 0


def test_without_a_helper_process_the_bytes_are_the_same(monkeypatch):
    images = testing.synthetic_images(1100, seed=4)
    monkeypatch.setattr(helper_processes.sys, "executable", "/nonexistent/python")
    encoder = png_encoder.PngEncoder()
    assert encoder._helper is None
    encoded = encoder.submit(images)
    encoder.close()
    assert list(encoded) == png_codec.encode_batch(images[..., 0])


def test_a_helper_killed_with_sigkill_fails_every_waiting_split_in_any_order():
    first, second = testing.synthetic_images(60_000, seed=5), testing.synthetic_images(3000, seed=6)
    encoder = png_encoder.PngEncoder()
    iterators = [encoder.submit(first), encoder.submit(second)]
    next(iterators[0])  # the helper is up and encoding the first split
    os.kill(encoder._helper.pid, signal.SIGKILL)
    killed = time.monotonic()
    for iterator in reversed(iterators):  # TFDS asks for splits in its own order, not the arrival order
        _, error = drain(iterator)
        assert isinstance(error, png_encoder.EncoderError), error
        assert re.search(r"PNG helper process \(pid \d+, killed by SIGKILL\)", str(error)), error
    late = encoder.submit(second)  # a split that arrives after the helper died
    encoder.close()
    assert "killed by SIGKILL" in str(drain(late)[1])
    assert time.monotonic() - killed < 30


def record_checks_here(monkeypatch) -> list[tuple[str, int]]:
    """(thread name, PNG count) of every check made in this process, from now on."""
    checked, real = [], png_codec.decodes_to

    def recording(pngs, images):
        checked.append((threading.current_thread().name, len(pngs)))
        return real(pngs, images)

    monkeypatch.setattr(png_codec, "decodes_to", recording)
    return checked


# Two splits in messages of the helper: the first in three (two whole, then 52 images), so that the second message,
# the one the fault helpers damage, lies inside it; the second split in one.
FIRST_SPLIT, SECOND_SPLIT = 2 * png_protocol.BATCH + 52, 900
MESSAGES = [png_protocol.BATCH, png_protocol.BATCH, 52, SECOND_SPLIT]


def consume_second_split_first(encoder: png_encoder.PngEncoder) -> None:
    """Submits two splits (FIRST_SPLIT and SECOND_SPLIT images), consumes the second in a thread named "consumer",
    then the first; checks the bytes."""
    first, second = testing.synthetic_images(FIRST_SPLIT, seed=8), testing.synthetic_images(SECOND_SPLIT, seed=9)
    iterators = [encoder.submit(first), encoder.submit(second)]
    encoder.close()
    result = {}
    consumer = threading.Thread(target=lambda: result.update(second=list(iterators[1])), name="consumer")
    consumer.start()
    consumer.join(60)
    assert result["second"] == png_codec.encode_batch(second[..., 0])
    assert list(iterators[0]) == png_codec.encode_batch(first[..., 0])


def test_pngs_are_checked_by_the_checker_process_and_not_here(monkeypatch):
    """This process runs TFDS's writer: inflating every PNG here cost it 0.9 s on full-size MNIST."""
    checked_here = record_checks_here(monkeypatch)
    encoder = png_encoder.PngEncoder()
    assert encoder._checker is not None  # the checker process started
    consume_second_split_first(encoder)
    assert checked_here == []
    assert encoder._checker.popen.wait(30) == 0 and encoder._checked == 4  # every message had its verdict


def test_without_a_checker_consumers_check_in_arrival_order(monkeypatch):
    """Not by the thread that reads the helper's output: that one waited for the GIL after every image."""
    monkeypatch.setattr(png_encoder, "_checker_command", lambda length: None)  # as where it cannot start
    checked = record_checks_here(monkeypatch)
    consume_second_split_first(png_encoder.PngEncoder())
    # The second split's consumer checked the first split's messages too, before its own: a lie anywhere
    # earlier would have failed it. Nothing is checked twice.
    assert checked == [("consumer", count) for count in MESSAGES]


# Each way the checker can fail, and what happens: the consumers check what it did not answer.
CHECKER_FAILURES = {
    "no_start": "did not start (it ended before its greeting)",
    "sigkill": "killed by SIGKILL",
    "exit_early": "exit status 3",
    # Exit status 0 before its last answers: only the count of answers (not the status) shows it failed.
    "exit_clean": "exit status 0) ended its output before it had answered every message",
    "stall": "sent nothing for 3 s while it owed an answer",
    "says_bad": "called PNG 1 of message 2 bad, which decodes to its image",
    "other_bytes": "checked other bytes than message 2",
    "other_pixels": "found other pixels in message 2 than its PNGs decode to",
    "out_of_order": "sent a malformed verdict",
}


def fake_checker(monkeypatch, mode: str) -> None:
    """The encoder starts tests/workers/png_checker_faults.py MODE in place of its checker."""
    command = [sys.executable, str(FAULTY_CHECKER), mode]
    monkeypatch.setattr(png_encoder, "_checker_command", lambda length: [*command, str(length)])


@pytest.mark.parametrize(("mode", "said"), CHECKER_FAILURES.items(), ids=list(CHECKER_FAILURES))
def test_a_checker_that_fails_leaves_the_checks_to_the_consumers(monkeypatch, capfd, mode, said):
    fake_checker(monkeypatch, mode)
    checked_here = record_checks_here(monkeypatch)
    encoder = png_encoder.PngEncoder(stall_seconds=3)
    started = time.monotonic()
    consume_second_split_first(encoder)
    assert time.monotonic() - started < 30
    err = capfd.readouterr().err
    assert re.search(r"PNG checker process \(pid \d+, [^)]+\) ", err) and said in err, err
    assert "Checking PNGs in this process instead." in err
    # Here were checked only the messages it had not answered (and, for says_bad and other_pixels, the one it
    # called bad or whose pixels it misreported).
    answered = {"no_start": 0, "says_bad": 0, "other_pixels": 0}.get(mode, 1)
    assert [count for _, count in checked_here] == MESSAGES[answered:]
    assert encoder._checker.popen.returncode is not None  # reaped


def test_consumers_go_on_when_the_note_of_a_failed_checker_cannot_be_written(monkeypatch):
    """stderr closed or a broken pipe (`prepare ... 2>&1 | head`): the note is lost, nothing waits for it."""
    fake_checker(monkeypatch, "sigkill")
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    started = time.monotonic()
    consume_second_split_first(png_encoder.PngEncoder(stall_seconds=3))
    assert time.monotonic() - started < 30


def test_silence_counts_from_when_an_answer_became_owed():
    """Asked 1.6 s into a 2 s limit, the helper answers 1.4 s later: within its limit, so it is not killed."""
    read_end, write_end = os.pipe()
    asked = time.monotonic() + 1.6
    reader = helper_processes.Reader(read_end, 2.0, lambda: time.monotonic() >= asked)
    answer = threading.Timer(3.0, os.write, (write_end, b"ok"))
    answer.start()
    try:
        assert reader.read(2) == b"ok"
    finally:
        answer.cancel()
        os.close(read_end)
        os.close(write_end)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipes take F_SETPIPE_SZ on Linux only")
def test_a_message_is_read_at_one_wake_up_and_what_follows_is_kept(monkeypatch):
    """Each wake-up of the thread reading a helper waits for the GIL that TFDS's writer holds: a message written
    at once is one read from the enlarged pipe; the bytes after it are the next read's; an end is still exact."""
    import fcntl

    read_end, write_end = os.pipe()
    real_read, reads = os.read, []
    monkeypatch.setattr(helper_processes.os, "read", lambda fd, size: reads.append(size) or real_read(fd, size))
    try:
        helper_processes._enlarge_pipe(write_end)  # as `_Process.start` does with both pipes of a helper
        assert fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) == helper_processes.READ_AHEAD
        reader = helper_processes.Reader(read_end, 5.0, lambda: True)
        message = os.urandom(300_000)  # 1,024 EMNIST PNGs (a message holds up to 4,096, in two reads then)
        assert os.write(write_end, b"HEAD" + message + b"NEXT") == 300_008  # all of it: the pipe holds 1 MiB
        assert [reader.read(4), reader.read(300_000), reader.read(2)] == [b"HEAD", message, b"NE"]
        assert len(reads) == 1
        os.close(write_end)
        with pytest.raises(helper_processes.Broken, match="ended its output 2 bytes into a 5-byte read"):
            reader.read(5)
    finally:
        os.close(read_end)
        with contextlib.suppress(OSError):
            os.close(write_end)


def test_a_lie_is_refused_when_the_checker_is_gone_too(monkeypatch):
    fake_checker(monkeypatch, "no_start")
    _, (first, second), iterators = two_splits(monkeypatch, "wrong_pixels", FIRST_SPLIT, 1500)
    for images, iterator in reversed(list(zip((first, second), iterators, strict=True))):
        pngs, error = drain(iterator)
        assert isinstance(error, png_encoder.EncoderError) and "does not decode to its image" in str(error), error
        assert pngs == png_codec.encode_batch(images[: len(pngs), ..., 0])


def two_splits(monkeypatch, mode: str, *sizes: int) -> tuple[png_encoder.PngEncoder, list[np.ndarray], list]:
    """An encoder whose helper is faked as `mode` (silent ones are killed after 3 s), given two splits' images."""
    fake_helper(monkeypatch, mode)
    splits = [testing.synthetic_images(size, seed=size) for size in sizes]
    encoder = png_encoder.PngEncoder(stall_seconds=3)
    iterators = [encoder.submit(images) for images in splits]
    encoder.close()
    return encoder, splits, iterators


LIED = "(?:killed by SIGKILL|exit status 0)"
# Each way the helper can die or lie, and the exit status the error must name.
BROKEN_PROMISES = {
    "sigkill": "killed by SIGKILL",  # killed while writing a message (issue 18)
    "short": "exit status 0",  # its last message 50 bytes short
    "cut_header": "exit status 0",  # cut inside a message header
    "exit_early": "exit status 3",
    "stall": "killed by SIGKILL",  # silent while it owes PNGs: killed after stall_seconds
    # A lie: the helper is killed if it still runs when the lie is found. Its 1 MiB pipe (Linux) takes all it
    # writes here, so it may have sent its last message and exited by then; the checker's verdict may come later.
    "garbage": LIED,
    "miscount": LIED,
    "extra": LIED,
    "wrong_pixels": LIED,
    "other_pixels": LIED,
}


@pytest.mark.parametrize(("mode", "status"), BROKEN_PROMISES.items(), ids=list(BROKEN_PROMISES))
def test_a_helper_that_dies_or_lies_fails_every_split_naming_its_exit_status(monkeypatch, mode, status):
    encoder, (first, second), iterators = two_splits(monkeypatch, mode, FIRST_SPLIT, 1500)
    started = time.monotonic()
    for images, iterator in reversed(list(zip((first, second), iterators, strict=True))):
        pngs, error = drain(iterator)
        assert isinstance(error, png_encoder.EncoderError), (error, len(pngs))
        assert re.search(rf"PNG helper process \(pid \d+, {status}\)", str(error)), error
        # Whatever was handed on before the failure is exactly what this process would have encoded.
        assert pngs == png_codec.encode_batch(images[: len(pngs), ..., 0])
    assert len(list(drain(iterators[0])[0])) == 0  # an exhausted consumer stays exhausted
    assert time.monotonic() - started < 40
    assert encoder._helper.returncode is not None  # reaped: no helper left running


@pytest.mark.parametrize("mode", ["no_start", "not_python", "silent"])
def test_a_helper_that_does_not_start_means_encoding_here(monkeypatch, capfd, mode):
    _, (first, second), iterators = two_splits(monkeypatch, mode, 1500, 900)
    assert drain(iterators[1])[0] == png_codec.encode_batch(second[..., 0])
    assert drain(iterators[0])[0] == png_codec.encode_batch(first[..., 0])
    assert "Encoding PNGs in this process instead." in capfd.readouterr().err


def test_the_check_refuses_a_png_of_other_pixels():
    images = testing.synthetic_images(3, seed=11)[..., 0]
    pngs = png_codec.encode_batch(images)
    assert png_codec.decodes_to(pngs, images) is None
    other = images.copy()
    other[1, 5, 5] ^= 1
    assert png_codec.decodes_to(png_codec.encode_batch(other), images) == 1
    assert png_codec.decodes_to([pngs[0], pngs[1][:-1], pngs[2]], images) == 1
    assert png_codec.decodes_to([pngs[0], pngs[1], pngs[2][:40] + b"x" + pngs[2][41:]], images) == 2


def png_of_scanlines(raw: bytes, height: int, width: int, after_stream: bytes = b"") -> bytes:
    """A well-formed PNG (chunk CRCs, zlib checksum) whose IDAT inflates to `raw`, whatever its length; its IDAT
    holds `after_stream` after the zlib stream."""
    idat = zlib.compress(raw) + after_stream
    crc = zlib.crc32(idat, zlib.crc32(b"IDAT")).to_bytes(4, "big")
    return (
        png_codec._header(height, width) + len(idat).to_bytes(4, "big") + b"IDAT" + idat + crc + png_codec._IEND_CHUNK
    )


def unfiltered_scanlines(images: np.ndarray) -> list[bytes]:
    """Each image's scanlines as its IDAT holds them: every row filter type 0 (None), then its pixels."""
    return [b"".join(bytes(1) + row.tobytes() for row in image) for image in images]


def test_the_check_refuses_pngs_that_join_up_to_the_right_pixels_but_split_them_wrongly():
    """PNG 1 carries its image and the first byte of image 2, PNG 2 the rest: together, the very scanlines."""
    images = testing.synthetic_images(3, seed=12)[..., 0]
    scanlines = unfiltered_scanlines(images)
    assert png_codec.decodes_to([png_of_scanlines(raw, 28, 28) for raw in scanlines], images) is None
    lying = [scanlines[0] + scanlines[1][:1], scanlines[1][1:], scanlines[2]]
    assert png_codec.decodes_to([png_of_scanlines(raw, 28, 28) for raw in lying], images) == 0


def test_the_checkers_verdict_names_a_png_of_the_wrong_form_and_tells_what_the_others_decode_to():
    images = testing.synthetic_images(3, seed=13)[..., 0]
    pngs = png_codec.encode_batch(images)
    assert png_codec.decoded_pixels_crc(pngs, 28, 28) == (None, zlib.crc32(images.data))
    other = images.copy()
    other[2, 27, 27] ^= 1
    assert png_codec.decoded_pixels_crc(png_codec.encode_batch(other), 28, 28) == (None, zlib.crc32(other.data))
    assert png_codec.decoded_pixels_crc([pngs[0], pngs[1][:-1], pngs[2]], 28, 28)[0] == 1
    assert png_codec.decoded_pixels_crc(pngs, 28, 27)[0] == 0  # another size in IHDR
    # The same pixels behind filter type 1 (Sub): a decoder would return others. Refused by its form.
    scanlines = unfiltered_scanlines(images)
    sub = bytearray(scanlines[1])
    sub[29] = 1
    assert png_codec.decoded_pixels_crc([pngs[0], png_of_scanlines(bytes(sub), 28, 28), pngs[2]], 28, 28)[0] == 1
    # The very scanlines, with bytes after the zlib stream (which zlib.decompress would ignore).
    trailing = [pngs[0], pngs[1], png_of_scanlines(scanlines[2], 28, 28, after_stream=b"x")]
    assert png_codec.decoded_pixels_crc(trailing, 28, 28)[0] == 2 and png_codec.decodes_to(trailing, images) == 2
    lying = [scanlines[0] + scanlines[1][:1], scanlines[1][1:], scanlines[2]]
    assert png_codec.decoded_pixels_crc([png_of_scanlines(raw, 28, 28) for raw in lying], 28, 28)[0] == 0


def run_anywhere(tmp_path: Path, command: list[str], cwd: Path | None = None) -> str:
    """Runs a png_anywhere.py command in a working directory whose modules shadow the standard library's."""
    cwd = cwd or tmp_path / "project"
    cwd.mkdir(exist_ok=True)
    for name in ("queue", "select", "struct", "zlib", "signal"):
        (cwd / f"{name}.py").write_text(f"raise ImportError('the project folder\\'s {name}.py was imported')\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("flags", [[], ["-I"], ["-P"]], ids=["plain", "-I", "-P"])
def test_the_helper_starts_beside_a_shadowing_module_and_under_isolation_flags(tmp_path, flags):
    out = run_anywhere(tmp_path, [sys.executable, *flags, str(ANYWHERE), "--package", str(PACKAGE)])
    assert "HELPER yes" in out


def test_the_helper_starts_from_a_removed_working_directory(tmp_path):
    """A job whose scratch folder was cleaned up: the helper still starts, as TFDS itself copes (issue 30)."""
    out = run_anywhere(tmp_path, [sys.executable, "-I", str(ANYWHERE), "--package", str(PACKAGE), "--gone-cwd"])
    assert "HELPER yes" in out


def test_the_helper_finds_numpy_where_the_parent_found_it(tmp_path):
    """As with pip --target, pex or Bazel: numpy and zlib-ng only on the sys.path the program sets up itself."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", tmp_path / "bare"], check=True, timeout=120)
    bare = tmp_path / "bare" / "bin" / "python"
    for module in ("numpy", "zlib_ng"):
        assert subprocess.run([bare, "-c", f"import {module}"], capture_output=True, timeout=60).returncode != 0
    target = tmp_path / "target"
    target.mkdir()
    for package in (Path(np.__file__).parent, Path(zlib_ng.__file__).parent):
        for name in (package.name, f"{package.name}.libs"):
            if (package.parent / name).exists():
                (target / name).symlink_to(package.parent / name)
    out = run_anywhere(tmp_path, [str(bare), str(ANYWHERE), "--path", str(target), "--package", str(PACKAGE)])
    assert "HELPER yes" in out


def test_the_helper_starts_from_a_zipapp(tmp_path):
    app = tmp_path / "app.pyz"
    with zipfile.ZipFile(app, "w") as archive:
        archive.writestr("__main__.py", ANYWHERE.read_text())
        archive.writestr("mnist_variants/__init__.py", "")
        for name in ENCODER_MODULES:
            archive.writestr(f"mnist_variants/{name}", (PACKAGE / name).read_text())
    assert "HELPER yes" in run_anywhere(tmp_path, [sys.executable, str(app)])


def test_a_frozen_application_encodes_in_its_own_process(tmp_path):
    out = run_anywhere(tmp_path, [sys.executable, str(ANYWHERE), "--package", str(PACKAGE), "--frozen"])
    assert "HELPER no" in out


@pytest.mark.parametrize(
    ("images", "error"),
    [(np.zeros((2, 28, 28), np.float32), TypeError), (np.zeros((2, 28, 28, 3), np.uint8), ValueError)],
)
def test_refuses_what_it_cannot_encode(images, error):
    with pytest.raises(error):
        png_codec.as_grayscale_batch(images)


FASHION_COUNTS = {"train": FIRST_SPLIT, "test": 600}  # three messages of the helper for train, one for test


def faulty_worker(tmp_path: Path, number: int, mode: str, env: dict[str, str]) -> Watched:
    """A prepare_worker.py preparing Fashion-MNIST from generated files, its PNG helper broken as `mode` says."""
    options = ("--manual_dir", str(tmp_path / "generated"))
    faults = ("--png_helper", mode) if mode else ()
    return Watched(
        tmp_path, f"worker{number}", prepare_command(FashionMnist.name, tmp_path / "data", *options, faults=faults), env
    )


def fashion(tmp_path: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """Generated Fashion-MNIST files in tmp_path/generated, and the environment that registers their checksums."""
    files = generated_files(FashionMnist, tmp_path / "generated", FASHION_COUNTS)
    return files, worker_env(tmp_path, FashionMnist, files, ["http://127.0.0.1:9/unused/"])


def assert_decodes_to_the_source_pixels(tmp_path: Path, files: dict[str, bytes]) -> None:
    """The images of the prepared dataset, decoded by TF, are its upstream files' images (TFDS shuffles them)."""
    builder = FashionMnist(data_dir=tmp_path / "data")
    for split, names in FashionMnist.SPLIT_FILES.items():
        source = np.frombuffer(gzip.decompress(files[names["images"]]), np.uint8, offset=16).reshape(-1, 28, 28, 1)
        prepared = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))["image"]
        assert sorted(image.tobytes() for image in prepared) == sorted(image.tobytes() for image in source)


def test_a_worker_whose_helper_is_killed_fails_in_seconds_and_the_waiting_worker_takes_over(tmp_path):
    files, env = fashion(tmp_path)
    cue = tmp_path / "kill-the-helper-now"
    victim = faulty_worker(tmp_path, 0, "sigkill", {**env, "MNIST_VARIANTS_TEST_HELPER_CUE": str(cue)})
    waiter = None
    try:
        victim.wait_for("Using local copy of")
        waiter = faulty_worker(tmp_path, 1, "", env)
        waiter.wait_for("Waiting for another process")
        cue.touch()  # the victim's helper now dies by SIGKILL half-way through a message
        killed = time.monotonic()
        assert victim.finish() != 0
        assert time.monotonic() - killed < 30  # not a hang: ended within seconds
        assert "EncoderError" in victim.err and "killed by SIGKILL" in victim.err, victim.err[-3000:]
        assert waiter.result()["splits"] == FASHION_COUNTS  # the lock was released: the waiting worker prepared
        assert_decodes_to_the_source_pixels(tmp_path, files)
    finally:
        for worker in (victim, waiter):
            if worker:
                worker.stop()


@pytest.mark.parametrize("mode", ["short", "wrong_pixels"])
def test_a_helper_that_lies_leaves_no_prepared_dataset(tmp_path, mode):
    status = BROKEN_PROMISES[mode]
    worker = faulty_worker(tmp_path, 0, mode, fashion(tmp_path)[1])
    assert worker.finish() != 0
    assert "EncoderError" in worker.err and re.search(rf"PNG helper process \(pid \d+, {status}\)", worker.err), (
        worker.err[-3000:]
    )
    assert not list((tmp_path / "data").rglob("dataset_info.json"))


def test_a_worker_whose_helper_cannot_start_prepares_in_its_own_process(tmp_path):
    files, env = fashion(tmp_path)
    worker = faulty_worker(tmp_path, 0, "no_start", env)
    assert worker.result()["splits"] == FASHION_COUNTS
    assert "Encoding PNGs in this process instead." in worker.err
    assert_decodes_to_the_source_pixels(tmp_path, files)


def children() -> list[str]:
    """'pid state' of every child of this process, zombies (not waited for) included, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # it ended meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid():
            found.append(f"{entry} {state}")
    return found


def helper_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("png-")]


# Every fault mode of both helpers (issue 31): after shutdown, no helper runs or waits to be reaped, and no thread
# that served one is left.
HELPER_MODES = [*BROKEN_PROMISES, "no_start", "not_python", "silent"]
CHECKER_MODES = [*CHECKER_FAILURES, "silent"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children are counted in /proc")
@pytest.mark.parametrize(
    ("role", "mode"),
    [("helper", mode) for mode in HELPER_MODES]
    + [("checker", mode) for mode in CHECKER_MODES]
    + [("both", "silent"), ("both", "wrapped")],
)
def test_no_helper_process_or_thread_outlives_shutdown(monkeypatch, role, mode):
    """ "wrapped": each helper is started through a wrapper that does not exec (as `conda run` does): the
    interpreter it starts, silent, is the wrapper's child, and must end with it (before, it ran on, ppid 1)."""
    assert children() == [] and helper_threads() == []
    token = f"png-wrapped-{os.getpid()}-{time.monotonic_ns()}"
    if mode == "wrapped":
        wrapped = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(300)' {token}; true"
        monkeypatch.setattr(png_encoder, "_helper_command", lambda length: ["sh", "-c", wrapped])
        monkeypatch.setattr(png_encoder, "_checker_command", lambda length: ["sh", "-c", wrapped])
    if role in ("helper", "both") and mode != "wrapped":
        fake_helper(monkeypatch, mode)
    if role in ("checker", "both") and mode != "wrapped":
        fake_checker(monkeypatch, mode)
    encoder = png_encoder.PngEncoder(stall_seconds=3)
    iterators = [encoder.submit(testing.synthetic_images(size, seed=size)) for size in (FIRST_SPLIT, 900)]
    encoder.close()
    for iterator in iterators:
        drain(iterator)  # whole, or up to the error that ends it
    started = time.monotonic()
    encoder.shutdown()
    assert time.monotonic() - started < helper_processes.EXIT_SECONDS + 5
    assert children() == [] and helper_threads() == []
    assert running_with(token) == []


def running_with(token: str) -> list[str]:
    """The pids of processes whose command line holds `token`, wherever they were reparented."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:  # it ended meanwhile
                continue
            if token.encode() in cmdline and int(entry) != os.getpid():
                found.append(entry)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children are counted in /proc")
def test_a_preparation_that_fails_midway_ends_its_helpers():
    """The consumers stop after one list of PNGs (the preparation failed elsewhere): shutdown ends both helpers
    at once, though the encoder still owes PNGs, and a consumer that goes on raises."""
    encoder = png_encoder.PngEncoder()
    iterator = encoder.submit_in_batches(testing.synthetic_images(60_000, seed=12))
    encoder.close()
    next(iterator)
    started = time.monotonic()
    encoder.shutdown()
    assert time.monotonic() - started < 5
    assert children() == [] and helper_threads() == []
    assert isinstance(drain(iterator)[1], png_encoder.EncoderError)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children are counted in /proc")
def test_a_checker_that_neither_greets_nor_exits_is_ended_with_the_encoder(monkeypatch, capfd):
    """An interpreter that neither greets nor exits runs both helpers: the encoder is ended after the stall limit
    and encoding falls back; the checker, owing nothing, was never ended (still running 70 s later, ppid 1)."""
    fake_helper(monkeypatch, "silent")
    fake_checker(monkeypatch, "silent")
    encoder = png_encoder.PngEncoder(stall_seconds=2)
    images = testing.synthetic_images(900, seed=13)
    pngs = encoder.submit(images)
    encoder.close()
    assert drain(pngs)[0] == png_codec.encode_batch(images[..., 0])
    deadline = time.monotonic() + 2 + helper_processes.EXIT_SECONDS
    while (children() or helper_threads()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children() == [] and helper_threads() == []
    assert "PNG checker process" in capfd.readouterr().err


def test_an_empty_submission_is_harmless():
    """Nothing is asked of the helper for it; before, it was never taken off the unanswered list, and the next
    submission failed ('sent 100 PNGs for a submission of 0')."""
    encoder = png_encoder.PngEncoder()
    empty, images = encoder.submit(np.zeros((0, 28, 28), np.uint8)), testing.synthetic_images(100, seed=14)
    pngs = encoder.submit(images)
    encoder.close()
    assert list(empty) == [] and list(pngs) == png_codec.encode_batch(images[..., 0])
    encoder.shutdown()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children are counted in /proc")
@pytest.mark.parametrize("outcome", ["prepared", "failed"])
def test_a_preparation_ends_its_helpers_before_it_returns_or_fails(monkeypatch, tmp_path, outcome):
    """Right when download_and_prepare returns or raises, no helper runs or waits to be reaped."""
    from conftest import FASHION_FILES, prepare, register_dummy_checksums, write_files

    register_dummy_checksums(monkeypatch, tmp_path, FashionMnist, FASHION_FILES)
    monkeypatch.setattr(FashionMnist, "SOURCES", ("http://127.0.0.1:9/unused/",))
    files = dict(FASHION_FILES)
    if outcome == "failed":  # a label file that is not upstream's, and no source answers
        files["t10k-labels-idx1-ubyte.gz"] = testing.gzip_bytes(testing.encode_idx(np.zeros(10, np.uint8)))
    write_files(tmp_path / "manual", files)
    if outcome == "failed":
        with pytest.raises(Exception, match="t10k-labels"):
            prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual")
    else:
        prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual")
    assert children() == [] and helper_threads() == []


def test_helpers_that_answered_everything_end_without_a_note(monkeypatch, tmp_path, capfd):
    """A real prepare whose writer is still busy when both helpers have answered everything and exited (a full-size
    one spends seconds writing after its last PNG arrived): before, every such prepare printed 'PNG checker process
    (pid ..., exit status 0) ended its output before it had answered every message' and 'Checking PNGs in this
    process instead.', counting the checker's end as a failure once it had been told that no more messages come."""
    from conftest import FASHION_FILES, assert_prepared, prepare, register_dummy_checksums, write_files

    register_dummy_checksums(monkeypatch, tmp_path, FashionMnist, FASHION_FILES)
    monkeypatch.setattr(FashionMnist, "SOURCES", ("http://127.0.0.1:9/unused/",))
    write_files(tmp_path / "manual", FASHION_FILES)
    shutdown, ended = png_encoder.PngEncoder.shutdown, []

    def shutdown_once_the_helpers_ended(encoder: png_encoder.PngEncoder, *args, **kwargs) -> None:
        for thread in encoder._threads:  # they end on their own once both helpers have exited
            thread.join(30)
        ended.append([thread.name for thread in encoder._threads if not thread.is_alive()])
        shutdown(encoder, *args, **kwargs)

    monkeypatch.setattr(png_encoder.PngEncoder, "shutdown", shutdown_once_the_helpers_ended)
    assert_prepared(prepare(FashionMnist, tmp_path, manual_dir=tmp_path / "manual"), "fashion_mnist")
    assert ended == [["png-feed", "png-read", "png-check-feed", "png-check-read"]]  # the checker was up and ended
    err = capfd.readouterr().err
    assert "PNG checker process" not in err and "instead" not in err, err


def test_helpers_without_their_source_say_so_and_encode_here(monkeypatch, capfd):
    """An install without .py files (compiled only) cannot give the helpers their source: the encoder says so on
    stderr and encodes in this process, the same PNGs."""
    monkeypatch.setattr(png_encoder, "_PROGRAM", None)
    encoder = png_encoder.PngEncoder()
    try:
        assert encoder._here
    finally:
        encoder.shutdown()
    err = capfd.readouterr().err
    assert "The PNG helpers cannot start: the source of mnist_variants' png_codec or png_protocol" in err, err
    assert "Encoding PNGs in this process instead" in err
