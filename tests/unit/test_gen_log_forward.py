"""gen-log's syslog forwarding (-f), run on this host against collectors on loopback: the RFC 5424
messages, every line in order over each transport, a collector that goes away and comes back, one
that stalls, one that stays away longer than the kept files last, and bad targets."""

from __future__ import annotations

import calendar
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.unit.test_gen_log import files_of, logged, numbered

MESSAGE = re.compile(rb"^<(\d+)>1 (\S+) (\S+) (\S+) - - - (.*)$", re.DOTALL)
SKIP_NOTE = re.compile(rb"gen-log: the syslog forwarding fell behind .* skipped (\d+) bytes")
WAIT = 20  # seconds any one expectation may take


class Collector:
    """A syslog collector on loopback (udp, tcp with octet-counted framing) or a unix datagram
    socket: what it receives, message by message, kept in order."""

    def __init__(self, kind: str, path: Path, port: int = 0):
        self.kind, self.path, self.messages, self._stop = kind, path, [], threading.Event()
        self._lock = threading.Lock()
        if kind == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(self.path))
        else:
            family_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
            self.sock = socket.socket(socket.AF_INET, family_type)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if kind == "udp":  # room for a burst: a full receive buffer drops datagrams, as UDP does
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
            self.sock.bind(("127.0.0.1", port))
            if kind == "tcp":
                self.sock.listen(4)
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        if self.kind == "unix":
            return f"unix://{self.path}"
        return f"{self.kind}://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        if self.kind != "tcp":
            while not self._stop.is_set():
                try:
                    self._add(self.sock.recv(65536))
                except TimeoutError:
                    continue
            return
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.1)
            self._read_frames(conn)
            conn.close()

    def _read_frames(self, conn: socket.socket) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            pending += chunk
            while b" " in pending[:12]:
                length, rest = pending.split(b" ", 1)
                if len(rest) < int(length):
                    break
                self._add(rest[: int(length)])
                pending = rest[int(length) :]

    def _add(self, message: bytes) -> None:
        with self._lock:
            self.messages.append(message)

    def texts(self) -> list[bytes]:
        with self._lock:
            return [MESSAGE.match(m).group(5) for m in self.messages]

    def wait_for(self, count: int) -> list[bytes]:
        deadline = time.monotonic() + WAIT
        while len(self.texts()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.texts()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        if self.kind == "unix":
            self.path.unlink(missing_ok=True)


class Logger:
    """gen-log fed through a pipe that stays open until finish()."""

    def __init__(self, binary: Path, log_dir: Path, *args: str):
        self.proc = subprocess.Popen([str(binary), *args, str(log_dir)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self) -> bytes:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=WAIT) == 0
        return self.proc.stderr.read()


def lines(data: bytes) -> list[bytes]:
    return data.splitlines()


@pytest.fixture
def collectors():
    made: list[Collector] = []

    def make(kind: str, path: Path, port: int = 0) -> Collector:
        made.append(Collector(kind, path, port))
        return made[-1]

    yield make
    for collector in made:
        collector.close()


@pytest.mark.parametrize("kind", ["udp", "tcp", "unix"])
def test_every_line_arrives_in_order_as_an_rfc5424_message(gen_log_binary, tmp_path, collectors, kind):
    collector = collectors(kind, tmp_path / "log.sock")
    count = 300 if kind == "udp" else 2000  # a burst of UDP larger than the collector's buffer is lost
    data = numbered(count) + b"\n" + b"last without newline"
    logger = Logger(gen_log_binary, tmp_path / "log", "-t", "tai64n", "-f", collector.url, "-a", "web", "-l", "local3")
    logger.write(data)
    assert logger.finish() == b""
    assert collector.wait_for(count + 2) == lines(data)
    stamps = re.findall(rb"^@([0-9a-f]{16})([0-9a-f]{8}) ", (tmp_path / "log" / "current").read_bytes(), re.M)
    first = MESSAGE.match(collector.messages[0])
    assert first.group(1) == b"%d" % (19 * 8 + 6) and first.group(3) == socket.gethostname().encode()
    assert first.group(4) == b"web"
    seconds, nanos = int(stamps[0][0], 16) - 2**62 - 37, int(stamps[0][1], 16)
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"
    assert first.group(2) == when.encode(), "the time of the line's stamp in the files, in UTC"


def test_iso8601_stamps_become_utc_times_and_no_stamp_is_the_nil_value(gen_log_binary, tmp_path, collectors):
    collector = collectors("udp", tmp_path / "unused")
    env = {**os.environ, "TZ": "Asia/Kolkata"}  # +05:30, written in local time as s6-log's T
    proc = subprocess.run(
        [str(gen_log_binary), "-t", "iso8601", "-f", collector.url, str(tmp_path / "a")],
        input=b"one\n",
        env=env,
        capture_output=True,
        timeout=WAIT,
    )
    assert proc.returncode == 0, proc.stderr
    collector.wait_for(1)
    local = (tmp_path / "a" / "current").read_bytes()[:19].decode()
    utc = calendar.timegm(time.strptime(local, "%Y-%m-%d %H:%M:%S")) - 5 * 3600 - 1800
    assert (
        MESSAGE.match(collector.messages[0])
        .group(2)
        .startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(utc)).encode())
    )
    assert MESSAGE.match(collector.messages[0]).group(4) == b"a", "the log directory's name by default"
    subprocess.run([str(gen_log_binary), "-f", collector.url, str(tmp_path / "b")], input=b"two\n", timeout=WAIT)
    collector.wait_for(2)
    assert MESSAGE.match(collector.messages[1]).group(2) == b"-"


def test_long_and_empty_lines(gen_log_binary, tmp_path, collectors):
    collector = collectors("tcp", tmp_path / "unused")
    long_line = bytes(range(65, 91)) * 1000  # 26 000 bytes: four messages of at most 7680
    proc = subprocess.run(
        [str(gen_log_binary), "-f", collector.url, str(tmp_path / "log")],
        input=b"\n" + long_line + b"\nend\n",
        capture_output=True,
        timeout=WAIT,
    )
    assert proc.returncode == 0, proc.stderr
    texts = collector.wait_for(6)
    assert texts[0] == b"" and b"".join(texts[1:5]) == long_line and texts[5] == b"end"
    assert [len(t) for t in texts[1:5]] == [7680, 7680, 7680, 2960]


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_a_collector_that_restarts_gets_every_line_once_in_order(gen_log_binary, tmp_path, collectors, kind):
    """Stopped while the app logs, restarted later on the same address: the lines logged meanwhile
    arrive once it is back (tcp: a closed connection is noticed before the next batch)."""
    collector = collectors(kind, tmp_path / "log.sock")
    port = collector.sock.getsockname()[1] if kind == "tcp" else 0
    logger = Logger(gen_log_binary, tmp_path / "log", "-f", collector.url)
    logger.write(numbered(100))
    assert len(collector.wait_for(100)) == 100
    collector.close()
    logger.write(numbered(100, start=100))
    time.sleep(0.5)  # backoff runs
    back = collectors(kind, tmp_path / "log.sock", port)
    logger.write(numbered(100, start=200))
    texts = collector.texts() + back.wait_for(200)
    err = logger.finish()
    assert texts == lines(numbered(300)), err
    assert b"retrying with backoff" in err and b"goes on" in err


def test_a_stalled_collector_never_slows_the_files(gen_log_binary, tmp_path):
    """A tcp collector that accepts and never reads: 20 MB still reach the files at once; at EOF
    gen-log gives the forwarding DRAIN_MS without progress, then exits, saying what is not sent."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        data = numbered(200_000)
        logger = Logger(
            gen_log_binary,
            tmp_path / "log",
            "-s",
            "100000000",
            "-d",
            "500",
            "-f",
            f"tcp://127.0.0.1:{server.getsockname()[1]}",
        )
        started = time.monotonic()
        logger.write(data)
        deadline = time.monotonic() + WAIT
        while data[-100:] not in (tmp_path / "log" / "current").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert logged(tmp_path / "log") == data
        err = logger.finish()
        assert time.monotonic() - started < WAIT
        assert re.search(rb"forwarding to tcp://\S+ made no progress for 500 ms at exit: the last \d+ bytes", err)
    finally:
        server.close()


def test_a_collector_away_longer_than_the_kept_files_is_skipped_over_and_said(gen_log_binary, tmp_path, collectors):
    sock = tmp_path / "log.sock"
    logger = Logger(gen_log_binary, tmp_path / "log", "-s", "100000", "-n", "2", "-f", f"unix://{sock}")
    logger.write(numbered(10_000))  # 1 MB: 10 files, 2 kept; nobody listens
    deadline = time.monotonic() + WAIT
    while len(files_of(tmp_path / "log")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    collector = collectors("unix", sock)
    logger.write(b"after\n")
    texts = collector.wait_for(1)
    deadline = time.monotonic() + WAIT
    while b"after" not in texts and time.monotonic() < deadline:
        texts = collector.wait_for(len(texts) + 1)
    logger.finish()
    notes = [t for t in texts if SKIP_NOTE.search(t)]
    assert notes, "the forwarding said what it skipped"
    assert texts[-1] == b"after"
    numbers = [int(t[:12]) for t in texts if t[:12].isdigit()]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 9999, "what it forwarded is in order, once"


def test_a_restarted_logger_forwards_what_the_last_one_could_not(gen_log_binary, tmp_path, collectors):
    sock = tmp_path / "log.sock"
    first = subprocess.run(
        [str(gen_log_binary), "-d", "200", "-f", f"unix://{sock}", str(tmp_path / "log")],
        input=numbered(50),
        capture_output=True,
        timeout=WAIT,
    )
    assert first.returncode == 0 and b"cannot be reached at exit: the last 5000 bytes" in first.stderr
    collector = collectors("unix", sock)
    subprocess.run(
        [str(gen_log_binary), "-f", f"unix://{sock}", str(tmp_path / "log")], input=numbered(50, start=50), timeout=WAIT
    )
    assert collector.wait_for(100) == lines(numbered(100))


@pytest.mark.parametrize(
    "target, said",
    [
        ("http://x:1", b"use udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH"),
        ("udp://x", b"use udp://HOST:PORT"),
        ("tcp://h st:514", b"use udp://HOST:PORT"),
        ("tcp://x:70000", b"the port 70000 is not a whole number from 1 to 65535"),
        ("udp://[::1]514", b"for IPv6"),
        ("unix://relative", b"absolute path"),
    ],
)
def test_a_bad_target_is_one_line_and_exit_111(gen_log_binary, tmp_path, target, said):
    proc = subprocess.run(
        [str(gen_log_binary), "-f", target, str(tmp_path / "log")], input=b"x\n", capture_output=True, timeout=WAIT
    )
    assert proc.returncode == 111 and said in proc.stderr and proc.stderr.count(b"\n") == 1, proc.stderr


def test_a_bad_facility_is_one_line(gen_log_binary, tmp_path):
    proc = subprocess.run(
        [str(gen_log_binary), "-f", "udp://127.0.0.1:9", "-l", "local8", str(tmp_path / "log")],
        capture_output=True,
        timeout=WAIT,
    )
    assert proc.returncode == 111 and b"local0 to local7" in proc.stderr


def test_check_mode_judges_the_options_alone(gen_log_binary):
    """The init checks GEN_LOG_FORWARD once at start with -c, by the parser the loggers use."""
    good = subprocess.run(
        [str(gen_log_binary), "-c", "-f", "tcp://[::1]:601", "-l", "local7"], capture_output=True, timeout=WAIT
    )
    assert (good.returncode, good.stderr) == (0, b"")
    bad = subprocess.run([str(gen_log_binary), "-c", "-f", "tcp://x"], capture_output=True, timeout=WAIT)
    assert bad.returncode == 111 and b"use udp://HOST:PORT" in bad.stderr


def test_a_udp_collector_that_is_down_is_said_once_not_at_every_send(gen_log_binary, tmp_path):
    """Each refusal comes back with the next datagram, so sends fail and succeed in turn: gen-log
    says the failure once a minute at most, and never that a UDP send 'goes on'."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    logger = Logger(gen_log_binary, tmp_path / "log", "-d", "300", "-f", f"udp://127.0.0.1:{port}")
    for i in range(20):
        logger.write(b"line %d\n" % i)
        time.sleep(0.05)
    err = logger.finish()
    assert err.count(b"retrying with backoff") <= 1 and b"goes on" not in err, err
    assert logged(tmp_path / "log") == b"".join(b"line %d\n" % i for i in range(20))
