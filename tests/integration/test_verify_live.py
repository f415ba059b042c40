"""`gen verify` end to end: it passes on every bundled example image (and on runtime's twin on
s6-overlay) and fails, with a readable table and no traceback, on images without gen's init layer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = ("debian-s6", "runtime", "app-base")


def _checks(result) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


@pytest.mark.parametrize("name", [*EXAMPLES, "overlay"])
def test_verify_passes_on_every_example(gen_verify, example_images, name: str) -> None:
    """overlay: runtime on real s6-overlay 3.2.3.2 built from its pinned sources (issue 19)."""
    if name not in example_images:
        pytest.skip("no s6-overlay image in this session (its pinned sources are not on this machine)")
    result = gen_verify(name, "--json")
    assert result.returncode in (0, 1), result.stderr
    failures = {n: c["detail"] for n, c in _checks(result).items() if c["status"] == "fail"}
    assert not failures, failures
    assert result.returncode == 0


def test_verify_table_by_spec_name(gen_verify) -> None:
    result = gen_verify("runtime")
    assert "gen verify localhost/gen/runtime:1.0" in result.stdout
    for row in ("PID 1 supervisor", "SIGTERM stop", "log rotation", "exit code", "orphans reaped"):
        assert row in result.stdout
    assert "check(s)" in result.stdout


def test_app_base_checks_user_volume_and_sysctls(gen_verify) -> None:
    checks = _checks(gen_verify("app-base", "--json"))
    assert checks["app user"]["status"] == "pass", checks["app user"]
    assert "uid 1000 gid 1000" in checks["app user"]["detail"]
    assert checks["volume ownership"]["status"] == "pass", checks["volume ownership"]
    assert checks["sysctls via --sysctl"]["status"] == "pass", checks["sysctls via --sysctl"]
    assert checks["sysctl policy"]["status"] == "pass", checks["sysctl policy"]
    assert "policy warn" in checks["sysctl policy"]["detail"]


def test_policy_fail_image_verifies_its_own_policy(gen_verify) -> None:
    checks = _checks(gen_verify("app-strict", "--json", "--check", "sysctl policy", "--check", "sysctls via --sysctl"))
    assert checks["sysctl policy"]["status"] == "pass", checks["sysctl policy"]
    assert "policy fail" in checks["sysctl policy"]["detail"]
    assert checks["sysctls via --sysctl"]["status"] == "pass", checks["sysctls via --sysctl"]


def test_verify_fails_readably_on_an_image_without_init(gen_verify) -> None:
    result = gen_verify("no-init")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 4}
    for check in ("init entrypoint", "PID 1 supervisor", "orphans reaped", "exit on signal", "log rotation"):
        assert "FAIL" in rows[check], rows.get(check)
    assert "check(s) failed" in result.stdout


def test_verify_fails_readably_on_a_foreign_image(gen_verify, bootstrapped_base: str) -> None:
    """A bare rootfs: no /etc/gen/spec.json, no /init; every applicable check still runs."""
    result = gen_verify(bootstrapped_base, "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    checks = _checks(result)
    assert checks["embedded spec"]["status"] == "fail"
    assert checks["PID 1 supervisor"]["status"] == "fail"


def test_verify_bad_input_exits_2(gen_verify) -> None:
    result = gen_verify("no-such-image")
    assert result.returncode == 2
    assert "no image" in result.stderr and "Traceback" not in result.stderr
    result = gen_verify("runtime", "--check", "no such check")
    assert result.returncode == 2 and "unknown check" in result.stderr


def test_verify_leaves_no_anonymous_volumes_behind(gen_verify, podman) -> None:
    """app-base declares VOLUME /data: each check container gets an anonymous volume, which must
    go with the container (issue 20: 92 had piled up after a day of runs)."""

    def volumes() -> set[str]:
        listed = podman.call(["volume", "ls", "--quiet"], timeout=60)
        assert listed.code == 0, listed.stderr
        return set(listed.stdout.split())

    before = volumes()
    # Checks that keep their container for a while (started, or run and then copied from).
    result = gen_verify(
        "app-base", "--json", "--check", "SIGTERM stop", "--check", "arguments intact", "--check", "orphans reaped"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert volumes() - before == set(), "gen verify left anonymous volumes behind"


def test_an_interrupted_verify_removes_its_containers_and_volumes(example_project, gen_env, podman) -> None:
    """Ctrl-C while a check container runs: the container and its anonymous volume go too."""

    def listed(*args: str) -> set[str]:
        found = podman.call([*args, "--quiet"], timeout=60)
        assert found.code == 0, found.stderr
        return set(found.stdout.split())

    volumes, containers = listed("volume", "ls"), listed("ps", "--all")
    verify = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "generator",
            "verify",
            "app-base",
            "-C",
            str(example_project),
            "--check",
            "SIGTERM stop",
        ],
        env=gen_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not listed("ps", "--all") - containers and verify.poll() is None:
        assert time.monotonic() < deadline, "no check container started within 120 s"
        time.sleep(0.2)
    verify.send_signal(signal.SIGINT)
    _, stderr = verify.communicate(timeout=120)
    assert verify.returncode == 130 and "Traceback" not in stderr, stderr
    assert listed("ps", "--all") - containers == set(), "an interrupted verify left its container"
    assert listed("volume", "ls") - volumes == set(), "an interrupted verify left an anonymous volume"
