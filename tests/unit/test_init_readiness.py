"""Readiness, start-up order, the start-up marker and the health script of gen's s6 init, run on
this host with the real s6 binaries as PID 1 of a fresh PID namespace (see test_init_scripts)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.unit.test_init_scripts import InitRoot, _svscan_pid, _wait_for, make_init_root
from tests.unit.test_init_scripts import pytestmark as init_script_marks

pytestmark = init_script_marks

HEADER = "app_user=''\napp_down_signal=SIGTERM\n"


@pytest.fixture
def init_root(tmp_path, gen_log_binary) -> InitRoot:
    return make_init_root(tmp_path, gen_log_binary)


def _health(init_root: InitRoot) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(init_root.path / "usr/lib/gen/init/health")],
        env=init_root.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cmd_after_a_service_starts_only_once_its_check_passes(init_root):
    flag = init_root.path / "db-ready"
    init_root.conf(
        HEADER + f"service db '' 0 sh -c 'sleep 1; touch {flag}; exec sleep 100'\n"
        f"ready db check 3 100 20000 test -e {flag}\n"
        "after app db\n"
    )
    started = time.monotonic()
    result = init_root.run("sh", "-c", f"test -e {flag} && echo db was ready", timeout=30)
    assert (result.returncode, result.stdout) == (0, b"db was ready\n"), result.stderr
    assert time.monotonic() - started >= 1


def test_a_notifying_service_is_ready_when_it_writes_to_its_fd_and_marks_start_up_done(init_root):
    init_root.conf(
        HEADER + "service web '' 0 sh -c 'sleep 0.5; echo >&5; exec sleep 100'\n"
        "ready web fd 5 1000 20000\n"
        "after app web\n"
        "ready app check 3 100 20000 true\n"
    )
    marker = init_root.path / "run/gen/ready"
    proc = init_root.start("sleep", "100")
    try:
        _wait_for(marker.exists, timeout=60)  # about 1 s; the bound allows for a loaded machine
        health = _health(init_root)
        assert (health.returncode, health.stdout) == (0, "healthy\n"), health
        os.kill(_svscan_pid(proc), 15)
        assert proc.wait(timeout=15) == 143
    finally:
        proc.kill()


def test_health_names_what_is_not_ready_or_down(init_root):
    init_root.conf(
        HEADER + "service slow '' 0 sleep 100\n"
        f"ready slow check 3 100 60000 test -e {init_root.path / 'never'}\n"
        "service gone '' 0 sh -c 'exec sleep 0.2'\n"
    )
    proc = init_root.start("sleep", "100")
    try:
        _svscan_pid(proc)
        _wait_for(lambda: "slow:not-ready" in _health(init_root).stdout, timeout=10)
        _wait_for(lambda: "gone:down" in _health(init_root).stdout, timeout=10)
        health = _health(init_root)
        assert health.returncode == 1 and health.stdout.startswith("unhealthy: start-up:unfinished "), health
        assert not (init_root.path / "run/gen/ready").exists()
    finally:
        proc.kill()


def test_a_service_never_ready_stops_the_start_with_its_name(init_root):
    init_root.conf(
        HEADER + "service db '' 0 sleep 100\n"
        f"ready db check 3 100 1000 test -e {init_root.path / 'never'}\n"
        "after app db\n"
    )
    result = init_root.run("echo", "never", timeout=30)
    assert result.returncode == 111 and b"never" not in result.stdout
    assert b"app did not wait any longer for service db: not ready in its ready.timeout" in result.stderr


@pytest.mark.parametrize("behaviour, warned", [("0", False), ("1", True)])
def test_a_service_never_ready_can_be_let_through(init_root, behaviour, warned):
    init_root.conf(
        HEADER + "service db '' 0 sleep 100\n"
        f"ready db check 3 100 500 test -e {init_root.path / 'never'}\n"
        "after app db\n"
    )
    result = init_root.run("echo", "ran", timeout=30, S6_BEHAVIOUR_IF_STAGE2_FAILS=behaviour)
    assert (result.returncode, result.stdout) == (0, b"ran\n"), result.stderr
    assert (b"service db: not ready" in result.stderr) is warned


def test_services_start_in_their_after_order(init_root):
    trace = init_root.path / "trace"
    init_root.conf(
        HEADER + f"service a '' 0 sh -c 'echo a >> {trace}; exec sleep 100'\n"
        "after a b\n"
        f"service b '' 0 sh -c 'sleep 0.5; echo b >> {trace}; exec sleep 100'\n"
        f"ready b check 3 50 20000 grep -q b {trace}\n"
        "after app a\n"
    )
    result = init_root.run("sh", "-c", f"echo app >> {trace}", timeout=30)
    assert result.returncode == 0, result.stderr
    assert trace.read_text().split() == ["b", "a", "app"]


def test_health_finds_the_tree_where_run_was_not_writable(init_root):
    """Where /run cannot be written (a root-owned tmpfs for an arbitrary uid), the init runs from
    /tmp/gen-run; podman exec of the health check does not see the init's GEN_RUN_DIR, so the
    health script must find that tree itself."""
    (init_root.path / "run").write_text("not a directory: /run/gen cannot be made\n")
    init_root.conf(HEADER + "service web '' 0 sh -c 'echo >&3; exec sleep 100'\nready web fd 3 1000 20000\n")
    marker = init_root.path / "tmp/gen-run/ready"
    proc = init_root.start("sleep", "100", S6_VERBOSITY="2")
    try:
        _wait_for(marker.exists, timeout=60)
        health = _health(init_root)
        assert (health.returncode, health.stdout) == (0, "healthy\n"), health
        subprocess.run(["s6-svc", "-d", str(init_root.path / "tmp/gen-run/service/web")], check=True, timeout=10)
        _wait_for(lambda: "web:down" in _health(init_root).stdout, timeout=10)
    finally:
        proc.kill()
        proc.wait(timeout=15)
    assert b"using " + str(init_root.path / "tmp/gen-run").encode() in proc.stderr.read()
