"""gen-log (templates/logger/gen-log.c) at its edges: a copy window that ends on a stamp, a copy
that starts mid-line, an engine that goes away with its pipe full, a marker cut by a block, a clock
that went back. Each case was a bug found by review; each test fails on the code before its fix."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.unit.test_gen_log import MARKER, files_of, logged, numbered, run_log

CHUNK = 1 << 20  # gen-log's block
STATE_MAGIC = 0x67656E6C6F673031
COPIER_STATE_AT = 512  # the stdout copy's place in gen-log.state: magic, inode, offset, line_start
STAMP = b"@400000006500000000000000 "  # a tai64n stamp as the files hold it (26 bytes)


def _place_copy_at(log_dir: Path, file: Path, offset: int) -> None:
    """A state file as a logger that stopped with its stdout copy at offset of file leaves it."""
    state = bytearray(COPIER_STATE_AT + 32)
    struct.pack_into("<QQQQ", state, COPIER_STATE_AT, STATE_MAGIC, file.stat().st_ino, offset, 1)
    (log_dir / "gen-log.state").write_bytes(bytes(state))


def test_a_copy_window_that_ends_right_after_a_stamp_keeps_that_lines_text(gen_log_binary, tmp_path):
    """The copy reads the files in 1 MiB windows; one that ended just after a line's stamp lost
    the first 26 bytes of that line's text (the next window took them for the stamp)."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    lines = []
    size = 0
    while size < CHUNK - len(STAMP) - 200:
        lines.append(STAMP + b"line %06d " % len(lines) + b"x" * 61 + b"\n")
        size += len(lines[-1])
    pad = CHUNK - len(STAMP) - size  # the last line before the window's edge fills up to it
    lines.append(STAMP + b"y" * (pad - len(STAMP) - 1) + b"\n")
    lines += [STAMP + b"after %06d " % i + b"z" * 40 + b"\n" for i in range(50)]
    archive = log_dir / "@400000006500000000000000.s"
    archive.write_bytes(b"".join(lines))
    assert archive.read_bytes()[CHUNK - len(STAMP) : CHUNK] == STAMP  # a window ends with a stamp
    _place_copy_at(log_dir, archive, 0)
    got = subprocess.run(
        [str(gen_log_binary), "-t", "tai64n", "-o", str(log_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"".join(line[len(STAMP) :] for line in lines)


def test_a_copy_started_fresh_on_a_file_ending_mid_line_copies_the_line_whole(gen_log_binary, tmp_path):
    """No copy state (a first start with -o): the copy starts at the end of current, which a killed
    run left mid-line; the continuation is not a new line and its text is not a stamp."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "current").write_bytes(STAMP + b"partial")
    rest = b"continuation of the line, longer than a stamp\nnext\n"
    got = run_log(gen_log_binary, log_dir, rest, "-t", "tai64n", "-o", "-p", "app")
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"continuation of the line, longer than a stamp\napp next\n"


def test_lines_written_under_another_stamp_setting_are_copied_uncut(gen_log_binary, tmp_path):
    """Files written with -t none and copied by a logger restarted with -t iso8601: nothing of the
    old lines looks like a stamp, so nothing of them is cut."""
    log_dir = tmp_path / "log"
    old = numbered(20)
    assert run_log(gen_log_binary, log_dir, old).returncode == 0
    _place_copy_at(log_dir, log_dir / "current", 0)
    got = run_log(gen_log_binary, log_dir, b"new\n", "-t", "iso8601", "-o")
    assert got.returncode == 0, got.stderr
    assert got.stdout == old + b"new\n"


def _wait_until_current_ends_with(log_dir: Path, tail: bytes, seconds: float = 20) -> None:
    """Until the writer has put tail at the end of current (which rotation may rename meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if (log_dir / "current").read_bytes().endswith(tail):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"current does not end with {tail[:20]!r} after {seconds} s")


def test_an_engine_gone_with_its_pipe_full_stops_the_copy_and_its_files_are_let_go(gen_log_binary, tmp_path):
    """The reader of stdout closes a full pipe: the copy notices (it only waited for room before),
    says it stops, and keeps no archive open that rotation then deletes (its space never came back)."""
    log_dir = tmp_path / "log"
    read_end, write_end = os.pipe()
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(gen_log_binary), "-o", "-s", "1000000", "-n", "3", str(log_dir)],
            stdin=subprocess.PIPE,
            stdout=write_end,
            stderr=err,
        )
    os.close(write_end)
    try:
        # 3 MB, all kept: the copy skips nothing, so it fills the 1 MiB pipe and waits for room.
        proc.stdin.write(numbered(30_000))
        proc.stdin.flush()
        _wait_until_current_ends_with(log_dir, numbered(1, start=29_999))
        time.sleep(0.3)
        os.close(read_end)  # the engine goes away, its pipe full
        deadline = time.monotonic() + 20
        while b"the stdout copy stops" not in err_path.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"the stdout copy stops: Broken pipe" in err_path.read_bytes()
        proc.stdin.write(numbered(50_000, start=30_000))  # rotation deletes the archive it had open
        proc.stdin.flush()
        _wait_until_current_ends_with(log_dir, numbered(1, start=79_999))
        held = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        assert not [path for path in held if path.endswith("(deleted)")], held
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
    assert logged(log_dir).endswith(numbered(1, start=79_999))  # the files took everything


def test_a_marker_cut_by_a_full_block_from_a_file_is_still_a_marker(gen_log_binary, tmp_path):
    """From a file (not a pipe) a 1 MiB read can end inside the end-of-run marker; it was logged
    as text. It ends the partial line before it, as a whole marker does."""
    head = b"a" * 99 + b"\n"
    body = head * ((CHUNK - 5) // 100)
    body += b"p" * (CHUNK - 5 - len(body)) + b"X"  # a partial line up to where the marker starts
    data = body + MARKER + b"next\n"
    assert data.index(MARKER) == CHUNK - 4  # the marker straddles the first block's end
    source = tmp_path / "input"
    source.write_bytes(data)
    with source.open("rb") as stdin:
        got = subprocess.run([str(gen_log_binary), str(tmp_path / "log")], stdin=stdin, capture_output=True, timeout=30)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "log" / "current").read_bytes() == body + b"\nnext\n"


def test_archives_named_after_a_clock_that_went_back_still_rotate_oldest_first(gen_log_binary, tmp_path):
    """An archive left by a clock set ahead (here: 2106) sorts after every name the clock gives
    now; new archives are named after it, so pruning by name deletes it first, not the newest."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    future = log_dir / "@40000001000000000000000a.s"
    future.write_bytes(b"from the future\n")
    data = numbered(5_000)  # 500 KB: five rotations of 100 KB
    got = run_log(gen_log_binary, log_dir, data, "-s", "100000", "-n", "2")
    assert got.returncode == 0, got.stderr
    archives = [p.name for p in files_of(log_dir)[:-1]]
    assert not future.exists() and len(archives) == 2
    assert all(name > future.name for name in archives), archives
    assert data.endswith(logged(log_dir))


def test_a_restart_consumes_only_input_that_is_byte_for_byte_what_was_written(gen_log_binary, tmp_path):
    """A logger killed while consuming a block it had written: the restart consumes the pipe's head
    only if it is that block. It compared the first and last 64 bytes, so new input that shared
    them (same first and last lines, different ones between) was consumed and lost."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    written = b"".join(b"line %04d\n" % i for i in range(1000))
    pending = written[:200] + b"".join(b"LINE %04d\n" % i for i in range(20, 980)) + written[-200:]
    assert len(pending) == len(written) and pending != written
    (log_dir / "current").write_bytes(written)
    writer_state = struct.pack(
        "<QQQQQQ", STATE_MAGIC, 2, (log_dir / "current").stat().st_ino, 0, len(written), 1
    )  # phase 2: consuming the block that starts at offset 0
    (log_dir / "gen-log.state").write_bytes(writer_state + written[:64] + written[-64:])
    read_end, write_end = os.pipe()
    os.write(write_end, pending)  # in the pipe before gen-log starts, as after a kill (10 KB fits)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stdin:
        got = subprocess.run([str(gen_log_binary), str(log_dir)], stdin=stdin, capture_output=True, timeout=30)
    assert got.returncode == 0, got.stderr
    assert logged(log_dir) == written + pending


# Kills the process at its Nth splice from stdin: gen-log's consume of a block it has written and
# recorded as consuming, the moment a restart must tell whether the pipe's head is that block.
KILL_AT_SPLICE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
ssize_t splice(int in, loff_t *in_off, int out, loff_t *out_off, size_t len, unsigned int flags) {
  static int calls;
  const char *at = getenv("KILL_AT_SPLICE");
  if (in == 0 && at && ++calls == atoi(at)) raise(SIGKILL);
  ssize_t (*real)(int, loff_t *, int, loff_t *, size_t, unsigned int) = dlsym(RTLD_NEXT, "splice");
  return real(in, in_off, out, out_off, len, flags);
}
"""


@pytest.fixture(scope="module")
def kill_at_splice(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("shim") / "kill_at_splice.c"
    source.write_text(KILL_AT_SPLICE)
    shim = source.with_suffix(".so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(shim), str(source), "-ldl"], check=True, timeout=60)
    return shim


@pytest.mark.parametrize(
    "blocks, kill_at, after, lines",
    [
        ([b"partial"], 1, b" end\n", [b"partial end\n"]),  # a block without newline
        ([b"abc", b"def\n"], 2, b"next\n", [b"abcdef\n", b"next\n"]),  # a block ending a partial line
        ([b"one\n"], 1, b"two\n", [b"one\n", b"two\n"]),
    ],
)
def test_a_logger_killed_while_consuming_a_stamped_block_logs_it_once(
    gen_log_binary, kill_at_splice, tmp_path, blocks, kill_at, after, lines
):
    """The state recorded the line start after the write, so with stamps a block that did not
    end a line was taken for new input and written twice by the restarted logger."""
    log_dir = tmp_path / "log"
    read_end, write_end = os.pipe()
    env = dict(os.environ, LD_PRELOAD=str(kill_at_splice), KILL_AT_SPLICE=str(kill_at))
    try:
        killed = subprocess.Popen([str(gen_log_binary), "-t", "tai64n", str(log_dir)], stdin=read_end, env=env)
        for block in blocks:  # one read each: written apart, with time for the logger to take it
            os.write(write_end, block)
            _wait_until_current_ends_with(log_dir, block)
        assert killed.wait(timeout=20) == -9
        restarted = subprocess.Popen([str(gen_log_binary), "-t", "tai64n", str(log_dir)], stdin=read_end)
        os.write(write_end, after)
    finally:
        os.close(write_end)
    assert restarted.wait(timeout=20) == 0
    os.close(read_end)
    current = (log_dir / "current").read_bytes()
    assert re.sub(rb"(?m)^@[0-9a-f]{24} ", b"", current) == b"".join(lines), current
