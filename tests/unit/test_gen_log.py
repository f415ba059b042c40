"""gen-log (templates/logger/gen-log.c), compiled on this host and run on its own: rotation,
stamps, the asynchronous stdout copy, and that nothing is lost or duplicated when it is killed
or stdout stalls. The same binary runs inside the images (tests/integration/test_logs.py)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TAI64N_NAME = re.compile(r"^@[0-9a-f]{24}\.s$")
ISO8601 = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}  ", re.MULTILINE)
TAI64N = re.compile(rb"^@([0-9a-f]{16})([0-9a-f]{8}) ", re.MULTILINE)
SKIP_LINE = re.compile(
    rb"^gen-log: the stdout copy fell behind .* skipped (\d+) bytes .*; (\d+) bytes in all\)\n", re.MULTILINE
)


def numbered(count: int, width: int = 100, start: int = 0) -> bytes:
    """count lines of exactly width bytes (newline included), each with its number first."""
    return b"".join(b"%012d %s\n" % (i, b"x" * (width - 14)) for i in range(start, start + count))


def files_of(log_dir: Path) -> list[Path]:
    archives = sorted(p for p in log_dir.iterdir() if p.name.startswith("@"))
    return archives + [log_dir / "current"]


def logged(log_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in files_of(log_dir))


def run_log(binary: Path, log_dir: Path, data: bytes, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args, str(log_dir)], input=data, capture_output=True, timeout=timeout)


def test_everything_arrives_rotated_at_line_boundaries_in_s6_logs_layout(gen_log_binary, tmp_path):
    data = numbered(50_000)  # 5 MB
    got = run_log(gen_log_binary, tmp_path / "log", data, "-s", "100000", "-n", "1000")
    assert (got.returncode, got.stdout, got.stderr) == (0, b"", b"")
    files = files_of(tmp_path / "log")
    assert logged(tmp_path / "log") == data
    assert all(TAI64N_NAME.match(p.name) for p in files[:-1]) and len(files) == 50  # 50 full files
    assert all(p.stat().st_size <= 100_000 and p.read_bytes().endswith(b"\n") for p in files)
    assert all(p.stat().st_mode & 0o777 == 0o744 for p in files)  # s6-log's mark of a complete file


def test_keep_deletes_the_oldest_archives(gen_log_binary, tmp_path):
    data = numbered(50_000)
    assert run_log(gen_log_binary, tmp_path / "log", data, "-s", "100000", "-n", "3").returncode == 0
    files = files_of(tmp_path / "log")
    assert len(files) == 4 and data.endswith(logged(tmp_path / "log"))


def test_a_line_longer_than_a_file_is_split_and_nothing_else_is(gen_log_binary, tmp_path):
    """All the input waits in the pipe before gen-log starts: fed while it runs, the long line's
    first part may arrive alone and rightly stay in the file that holds `short` (CI saw that)."""
    data = b"short\n" + b"L" * 10_000 + b"\nend\n"
    read_end, write_end = os.pipe()
    os.write(write_end, data)  # 10 KB: within the pipe's buffer
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stdin:
        got = subprocess.run(
            [str(gen_log_binary), "-s", "4096", "-n", "100", str(tmp_path / "log")],
            stdin=stdin,
            capture_output=True,
            timeout=60,
        )
    assert got.returncode == 0, got.stderr
    assert logged(tmp_path / "log") == data
    assert [p.stat().st_size for p in files_of(tmp_path / "log")] == [6, 4096, 4096, 1808 + 1 + 4]


def test_a_last_line_without_newline_gets_one_in_files_and_on_stdout(gen_log_binary, tmp_path):
    got = run_log(gen_log_binary, tmp_path / "log", b"first\nlast", "-o")
    assert got.returncode == 0 and got.stdout == b"first\nlast\n"
    assert (tmp_path / "log" / "current").read_bytes() == b"first\nlast\n"


def test_a_restart_appends_and_copies_only_new_output(gen_log_binary, tmp_path):
    assert run_log(gen_log_binary, tmp_path / "log", b"one\n", "-o").stdout == b"one\n"
    assert run_log(gen_log_binary, tmp_path / "log", b"two\n", "-o").stdout == b"two\n"
    assert (tmp_path / "log" / "current").read_bytes() == b"one\ntwo\n"


def test_iso8601_stamps_go_to_the_files_not_to_stdout(gen_log_binary, tmp_path):
    data = numbered(20_000)
    got = run_log(gen_log_binary, tmp_path / "log", data, "-t", "iso8601", "-o", "-s", "100000", "-n", "1000")
    assert got.returncode == 0 and got.stdout == data
    text = logged(tmp_path / "log")
    stripped, count = ISO8601.subn(b"", text)
    assert (stripped, count) == (data, 20_000)
    assert all(p.stat().st_size <= 100_000 for p in files_of(tmp_path / "log"))


def test_tai64n_stamps_are_s6_logs_labels(gen_log_binary, tmp_path):
    before = time.time()
    got = run_log(gen_log_binary, tmp_path / "log", b"a\nb\n", "-t", "tai64n")
    assert got.returncode == 0
    text = (tmp_path / "log" / "current").read_bytes()
    stamps = TAI64N.findall(text)
    assert len(stamps) == 2 and TAI64N.sub(b"", text) == b"a\nb\n"
    seconds = int(stamps[0][0], 16) - 2**62 - 37  # TAI64: 2^62 + TAI seconds; TAI = UTC + 37 s
    assert before - 1 <= seconds <= time.time() + 1


def test_the_prefix_goes_before_each_stdout_line_only(gen_log_binary, tmp_path):
    got = run_log(gen_log_binary, tmp_path / "log", b"a\nb\n", "-o", "-p", "web:", "-t", "tai64n")
    assert got.stdout == b"web: a\nweb: b\n"
    assert TAI64N.sub(b"", (tmp_path / "log" / "current").read_bytes()) == b"a\nb\n"


@pytest.mark.parametrize(
    "args, said",
    [
        (["-s", "100", "DIR"], "-s 100 is not a whole number from 4096"),
        (["-t", "local", "DIR"], "-t local: use none, tai64n or iso8601"),
        (["-x", "DIR"], "unknown option; usage: gen-log"),
        (["DIR", "-s"], "one directory only; usage: gen-log"),
        (["-s"], "an option lacks its value; usage: gen-log"),
        ([], "no log directory; usage: gen-log"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_111(gen_log_binary, tmp_path, args, said):
    argv = [str(tmp_path / "log") if a == "DIR" else a for a in args]
    got = subprocess.run([str(gen_log_binary), *argv], input=b"", capture_output=True, timeout=10)
    assert got.returncode == 111 and said in got.stderr.decode() and got.stderr.count(b"\n") == 1


def test_a_second_logger_on_the_same_directory_is_refused(gen_log_binary, tmp_path):
    first = subprocess.Popen([str(gen_log_binary), str(tmp_path / "log")], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while not (tmp_path / "log" / "current").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        got = run_log(gen_log_binary, tmp_path / "log", b"x\n")
        assert got.returncode == 111 and b"in use by another logger" in got.stderr
    finally:
        first.communicate(b"", timeout=10)


def test_sigterm_does_not_cut_the_log_short(gen_log_binary, tmp_path):
    proc = subprocess.Popen([str(gen_log_binary), str(tmp_path / "log")], stdin=subprocess.PIPE)
    proc.stdin.write(b"before\n")
    proc.stdin.flush()
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert proc.poll() is None, "gen-log ends at EOF, not at SIGTERM"
    proc.communicate(b"after", timeout=10)
    assert (tmp_path / "log" / "current").read_bytes() == b"before\nafter\n"


@pytest.mark.parametrize("copy", [[], ["-o"]])
def test_with_e_sigterm_ends_the_input_once_the_pipe_is_empty(gen_log_binary, tmp_path, copy):
    """Under s6-rc a fd holder keeps the write end open, so EOF never comes: -e ends on SIGTERM,
    after logging everything the pipe held (a last partial line included), stdout copy too."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [str(gen_log_binary), "-e", *copy, str(tmp_path / "log")], stdin=read_end, stdout=subprocess.PIPE
    )
    os.close(read_end)
    try:
        os.write(write_end, numbered(2000) + b"partial")  # 200 kB: more than one read
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)  # the write end stays open: only SIGTERM ends it
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert (tmp_path / "log" / "current").read_bytes() == numbered(2000) + b"partial\n"
    assert out == (numbered(2000) + b"partial\n" if copy else b"")


# --- a stalled stdout -------------------------------------------------------------------------


def test_a_stalled_stdout_never_slows_the_files_and_skips_are_counted(gen_log_binary, tmp_path):
    """stdout is a pipe nobody reads: the files take everything at once; the copy falls behind by
    more than the kept files, skips what rotation deleted, and says so in one line each time (in
    the files, and so on stdout) with the total so far."""
    read_end, write_end = os.pipe()
    count = 200_000
    data = numbered(count)  # 20 MB: 20 files of 1 MB, 3 kept
    # A patient drain (60 s without progress): the test reads stdout only once the files hold the
    # last line, which on a loaded machine (the rehearsal runs beside the suite) took over 5 s.
    proc = subprocess.Popen(
        [str(gen_log_binary), "-o", "-s", "1000000", "-n", "3", "-d", "60000", str(tmp_path / "log")],
        stdin=subprocess.PIPE,
        stdout=write_end,
    )
    os.close(write_end)
    proc.stdin.write(data)
    proc.stdin.close()
    last_line = data[-100:]
    deadline = time.monotonic() + 60
    while last_line not in (tmp_path / "log" / "current").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last_line in (tmp_path / "log" / "current").read_bytes(), "the files took all input, stdout stalled"
    assert proc.poll() is None, "the copy is still waiting for stdout"
    out = b""
    while chunk := os.read(read_end, 1 << 20):  # the engine resumes: stdout catches up, then EOF
        out += chunk
    os.close(read_end)
    assert proc.wait(timeout=20) == 0
    notes = SKIP_LINE.findall(out)
    assert notes, "the copy skipped and said so"
    lines = SKIP_LINE.sub(b"", out).splitlines(keepends=True)
    numbers = [int(line[:12]) for line in lines]
    assert all(line == numbered(1, start=n) for n, line in zip(numbers, lines, strict=False)), "whole lines only"
    assert numbers == sorted(set(numbers)), "no line twice, order kept"
    # The first line is 0 only when the copy started before rotation deleted the first file: under
    # load the files can take 2 MB before the copy thread runs, and the skip note then covers them.
    assert numbers[-1] == count - 1
    missing = (count - len(numbers)) * 100
    total = int(notes[-1][1])  # also counts the bytes of skip lines that were themselves skipped
    assert missing <= total <= missing + 300 * 20, (missing, total)


def test_at_exit_a_stalled_stdout_gets_the_drain_time_then_gen_log_exits(gen_log_binary, tmp_path):
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [str(gen_log_binary), "-o", "-d", "300", str(tmp_path / "log")],
        stdin=subprocess.PIPE,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    start = time.monotonic()
    _, err = proc.communicate(numbered(30_000), timeout=20)  # 3 MB: more than a pipe holds
    elapsed = time.monotonic() - start
    os.close(read_end)
    assert proc.returncode == 0 and elapsed < 5
    assert b"stdout took nothing for 300 ms at exit" in err
    assert logged(tmp_path / "log") == numbered(30_000)


# --- killed -------------------------------------------------------------------------------------


def _writer(count: int) -> list[str]:
    """A python child writing numbered lines of varied length as fast as it can."""
    code = (
        "import os\nout = os.fdopen(1, 'wb', buffering=1 << 16)\n"
        f"for i in range({count}):\n    out.write(b'%09d %s\\n' % (i, b'y' * (i % 150)))\nout.flush()\n"
    )
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("stamp", ["none", "iso8601"])
def test_killing_the_logger_again_and_again_loses_and_duplicates_nothing(gen_log_binary, tmp_path, stamp):
    """As under s6-supervise: the pipe outlives the logger (this test holds its read end, as
    s6-svscan does), and a new logger takes over after each SIGKILL."""
    count, log_dir = 1_000_000, tmp_path / "log"
    read_end, write_end = os.pipe()
    writer = subprocess.Popen(_writer(count), stdout=write_end)
    os.close(write_end)
    argv = [str(gen_log_binary), "-t", stamp, "-s", "1000000", "-n", "1000", str(log_dir)]
    kills, deadline = 0, time.monotonic() + 60
    rng = random.Random(18)
    logger = subprocess.Popen(argv, stdin=read_end)
    while writer.poll() is None and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.002, 0.03))
        logger.kill()
        logger.wait()
        kills += 1
        logger = subprocess.Popen(argv, stdin=read_end)
    assert writer.wait(timeout=30) == 0
    logger.kill()
    logger.wait()
    last = subprocess.Popen(argv, stdin=read_end)
    os.close(read_end)  # the last logger sees EOF once the pipe is empty
    assert last.wait(timeout=60) == 0
    text = logged(log_dir)
    if stamp == "iso8601":
        text, stamped = ISO8601.subn(b"", text)
        assert stamped == count
    assert kills >= 5
    expected = b"".join(b"%09d %s\n" % (i, b"y" * (i % 150)) for i in range(count))
    if text != expected:
        got = text.split(b"\n")
        first = next(i for i, line in enumerate(got) if line != b"%09d %s" % (i, b"y" * (i % 150)))
        raise AssertionError(f"after {kills} kills, line {first} is {got[first][:40]!r}")


MARKER = b"\0gen-log:end-of-run\0"


@pytest.mark.parametrize("through", ["pipe", "file"])
def test_the_end_of_run_marker_ends_a_partial_line_and_is_never_logged(gen_log_binary, tmp_path, through):
    """A finish script writes the marker after its run's output; other NUL bytes are data."""
    data = b"a\npart 1" + MARKER + b"b\n" + MARKER + b"bin\0ary\n" + MARKER[:-1] + b"\n" + b"c"
    want = b"a\npart 1\nb\nbin\0ary\n" + MARKER[:-1] + b"\nc\n"
    if through == "file":
        source = tmp_path / "input"
        source.write_bytes(data)
        with source.open("rb") as stdin:
            got = subprocess.run(
                [str(gen_log_binary), "-o", str(tmp_path / "log")], stdin=stdin, capture_output=True, timeout=10
            )
    else:
        got = run_log(gen_log_binary, tmp_path / "log", data, "-o")
    assert (got.returncode, got.stdout) == (0, want)
    assert (tmp_path / "log" / "current").read_bytes() == want
