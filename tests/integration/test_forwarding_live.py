"""Log forwarding to a real syslog daemon (Debian's rsyslog, in the session's `collector` image) on
both inits: every line in order over tcp, udp and a unix socket, and over tcp every line again
after the collector was stopped and started while the app went on logging."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from generator.verify.podman import Podman
from tests.integration.conftest import COLLECTOR_PORT

pytestmark = pytest.mark.integration

# CMD copies whatever is written into /tmp/in to its output: the test decides when lines appear.
FEED_CMD = ["sh", "-c", "mkfifo /tmp/in && while :; do cat /tmp/in; done"]
WAIT = 60  # seconds for what the collector should have received


def _received(collect: Path) -> list[tuple[str, str, str]]:
    """(app-name, facility, message) of each line rsyslog wrote, in order."""
    path = collect / "received"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        app, facility, _time, message = (line.split(" ", 3) + ["", "", ""])[:4]
        rows.append((app, facility, message.strip()))
    return rows


def _wait_for(collect: Path, count: int) -> list[tuple[str, str, str]]:
    deadline = time.monotonic() + WAIT
    rows = _received(collect)
    while len([r for r in rows if r[2].startswith("fwd-")]) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = _received(collect)
    return [r for r in rows if r[2].startswith("fwd-")]


def _feed(podman: Podman, app: str, first: int, count: int) -> None:
    script = f"i={first}; while [ $i -lt {first + count} ]; do echo fwd-$i; i=$((i+1)); done > /tmp/in"
    fed = podman.exec(app, ["sh", "-c", script], timeout=60)
    assert fed.code == 0, fed


def _lines(first: int, count: int) -> list[str]:
    return [f"fwd-{i}" for i in range(first, first + count)]


@pytest.fixture
def collect_dir(tmp_path: Path) -> Path:
    collect = tmp_path / "collect"
    collect.mkdir(mode=0o777)
    collect.chmod(0o777)  # the app's logger (its own uid) connects to the socket rsyslog makes here
    return collect


def _start_app(podman: Podman, ref: str, forward_to: str, collect: Path) -> str:
    name = podman.start(
        ref,
        FEED_CMD,
        options=["-v", f"{collect}:/collect"],
        env={"GEN_LOG_FORWARD": forward_to, "GEN_LOG_FORWARD_FACILITY": "local2", "GEN_LOG_TIMESTAMP": "tai64n"},
        timeout=120,
    )
    deadline = time.monotonic() + WAIT
    while podman.exec(name, ["test", "-p", "/tmp/in"]).code != 0:
        assert time.monotonic() < deadline and podman.running(name), podman.logs_tail(name, 10)
        time.sleep(0.2)
    return name


def _start_collector(podman: Podman, collector_ref: str, app: str, collect: Path) -> str:
    """rsyslog in the app's network namespace (so 127.0.0.1 is shared), writing into collect."""
    name = podman.start(collector_ref, options=["--network", f"container:{app}", "-v", f"{collect}:/collect"])
    deadline = time.monotonic() + WAIT
    while not (collect / "log.sock").exists():
        assert time.monotonic() < deadline and podman.running(name), podman.logs_tail(name, 10)
        time.sleep(0.2)
    return name


@pytest.mark.parametrize("image", ["runtime", "overlay"])
def test_rsyslog_gets_every_line_in_order_and_again_after_a_restart(
    podman: Podman, example_images, collect_dir: Path, image
):
    if image not in example_images:
        pytest.skip("no s6-overlay image in this session (its pinned sources are not on this machine)")
    app = _start_app(podman, example_images[image], f"tcp://127.0.0.1:{COLLECTOR_PORT}", collect_dir)
    collector = ""
    try:
        collector = _start_collector(podman, example_images["collector"], app, collect_dir)
        _feed(podman, app, 0, 500)
        assert [r[2] for r in _wait_for(collect_dir, 500)] == _lines(0, 500)
        assert podman.stop(collector, grace=10).code == 0
        _feed(podman, app, 500, 500)  # the collector is down: the files keep them
        time.sleep(1)
        assert podman.call(["start", collector], timeout=60).code == 0
        _feed(podman, app, 1000, 500)
        rows = _wait_for(collect_dir, 1500)
        assert [r[2] for r in rows] == _lines(0, 1500), "every line once, in order"
        assert {(r[0], r[1]) for r in rows} == {(image, "local2")}, "the image's name and the facility asked for"
    finally:
        for name in (collector, app):
            if name:
                podman.remove(name)


@pytest.mark.parametrize("transport", ["udp", "unix"])
def test_rsyslog_gets_every_line_over_udp_and_a_unix_socket(
    podman: Podman, example_images, collect_dir: Path, transport
):
    target = f"udp://127.0.0.1:{COLLECTOR_PORT}" if transport == "udp" else "unix:///collect/log.sock"
    app = _start_app(podman, example_images["runtime"], target, collect_dir)
    collector = ""
    try:
        collector = _start_collector(podman, example_images["collector"], app, collect_dir)
        _feed(podman, app, 0, 200)
        assert [r[2] for r in _wait_for(collect_dir, 200)] == _lines(0, 200)
    finally:
        for name in (collector, app):
            if name:
                podman.remove(name)
