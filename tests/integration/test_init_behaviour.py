"""The init layer as PID 1, shown by running the built examples with podman (issue 5's "done when").

Every behaviour test runs on both init providers (the `init_image` fixture): runtime on gen's own
init over the distro's s6, and the same image on real s6-overlay (issue 19), which must behave
check for check the same. Every image copies its logs to stdout (the default); GEN_LOG_STDOUT=0
keeps them in /lain/logs/default only.
Bounds asserted here are the issue's behaviour bounds (stop < 2 s vs the 10 s grace time).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from generator.verify.checks import OVERLAY_STOP_NOTICE
from generator.verify.podman import Podman, new_name, poll

pytestmark = pytest.mark.integration

LOG_DIR = "/lain/logs/default"
STOP_BOUND = 2.0
TRICKY = ["two words", "it's", '"double"', "", "$HOME", "*", "tab\there", "  padded  ", "a;b|c&&d"]


def _start_ready(podman: Podman, ref: str, script: str, marker: str = "/tmp/ready") -> str:
    name = podman.start(ref, ["sh", "-c", script])
    if not poll(lambda: podman.exec(name, ["test", "-e", marker]).code == 0, 20):
        logs = podman.logs_tail(name)
        podman.remove(name)
        pytest.fail(f"{ref}: the app did not start within 20 s: {logs}")
    return name


def _on_overlay(ref: str) -> bool:
    return "/overlay:" in ref


def _stop(podman: Podman, name: str, grace: int = 10) -> tuple[float, int | None]:
    try:
        stopped = podman.stop(name, grace)
        assert stopped.code == 0, stopped.stderr
        return stopped.seconds, podman.wait(name)
    finally:
        podman.remove(name)


def test_sigterm_handling_app_stops_fast(podman: Podman, init_image: str, record_property) -> None:
    app = 'trap "exit 0" TERM; touch /tmp/ready; while :; do sleep 1 & wait $!; done'
    fast, code = _stop(podman, _start_ready(podman, init_image, app))
    record_property("gen_stop_seconds", round(fast, 2))
    assert code == 0, "an app exiting 0 on SIGTERM must make the container exit 0 (not 111 or 2)"
    assert fast < STOP_BOUND, f"gen image took {fast:.2f} s to stop"


def test_a_stop_takes_the_apps_own_time(podman: Podman, init_image: str) -> None:
    """An app that needs 1.5 s to stop gets it, and the container ends right after, with its code."""
    app = 'trap "sleep 1.5; exit 3" TERM; touch /tmp/ready; while :; do sleep 1 & wait $!; done'
    seconds, code = _stop(podman, _start_ready(podman, init_image, app))
    assert code == 3 and 1.5 <= seconds < 1.5 + STOP_BOUND, f"stop took {seconds:.2f} s (exit {code})"


def test_shell_pid1_baseline_waits_the_grace_time(
    podman: Podman, example_images: dict[str, str], record_property
) -> None:
    baseline = podman.start(example_images["no-init"])  # CMD sh -c 'sleep 60' as PID 1
    assert poll(lambda: podman.running(baseline), 10)
    slow, code = _stop(podman, baseline)
    record_property("shell_pid1_stop_seconds", round(slow, 2))
    assert slow >= 9.5, f"the shell PID 1 baseline stopped in {slow:.2f} s: it should wait out the 10 s grace time"
    assert code == 128 + signal.SIGKILL


def test_orphaned_process_is_reaped(podman: Podman, init_image: str) -> None:
    app = "(sleep 0.5 & echo $! > /tmp/orphan); touch /tmp/ready; exec sleep 600"
    name = _start_ready(podman, init_image, app)
    try:
        orphan = podman.exec(name, ["cat", "/tmp/orphan"]).stdout.strip()
        assert orphan.isdigit()

        def gone() -> bool:
            states = podman.exec(
                name, ["sh", "-c", 'for f in /proc/[0-9]*/stat; do read -r l < "$f" && echo "$l"; done 2>/dev/null']
            ).stdout
            zombies = [line for line in states.splitlines() if line.rpartition(") ")[2].startswith("Z")]
            return not zombies and not any(line.startswith(orphan + " ") for line in states.splitlines())

        assert poll(gone, 10, interval=0.25), f"orphan {orphan} was not reaped (zombie left)"
        assert podman.exec(name, ["cat", "/proc/1/comm"]).stdout.strip() == "s6-svscan"
    finally:
        podman.remove(name)


def test_log_rotation_keeps_current_plus_three_archives_under_the_limit(
    podman: Podman, init_image: str, tmp_path: Path
) -> None:
    lines, limit = 30_000, 100_000  # 100 bytes a line: 3 MB
    fmt = "line %07.0f " + "x" * 87
    name = new_name()
    try:
        got = podman.run(
            init_image,
            ["seq", "-f", fmt, "1", str(lines)],
            name=name,
            remove=False,
            env={"GEN_LOG_MAX_SIZE": str(limit), "GEN_LOG_KEEP": "3", "GEN_LOG_STDOUT": "0"},
            timeout=180,
        )
        assert got.code == 0, got.stderr
        # The stdout copy's backlog is bounded by the kept files (300 kB here), less than a burst
        # of 3 MB: tests/integration/test_logs.py checks the copy with room to keep up.
        assert got.stdout == "", "GEN_LOG_STDOUT=0 keeps the container's stdout empty"
        copied = podman.copy_out(name, LOG_DIR, tmp_path / "logs")
        assert copied.code == 0, copied.stderr
    finally:
        podman.remove(name)
    logs = tmp_path / "logs"
    archives = sorted(p for p in logs.iterdir() if p.name.startswith("@"))
    assert len(archives) == 3, sorted(p.name for p in logs.iterdir())
    assert all(p.suffix in (".s", ".u") for p in archives)
    for path in [*archives, logs / "current"]:
        assert path.stat().st_size <= limit, f"{path.name}: {path.stat().st_size} bytes"
    kept = [line for p in [*archives, logs / "current"] for line in p.read_text().splitlines()]
    numbers = [int(line.split()[1]) for line in kept]
    assert numbers[-1] == lines, "the newest line must be on disk when the container has exited"
    assert numbers == list(range(numbers[0], lines + 1)), "kept lines must be contiguous"
    assert all(line == fmt.replace("%07.0f", f"{n:07d}") for n, line in zip(numbers, kept, strict=False))


@pytest.mark.parametrize(
    "script, code",
    [
        ("exit 7", 7),
        ("exit 0", 0),
        ("kill -USR1 $$", 128 + 10),
        ("kill -KILL $$", 128 + 9),
        ("kill -TERM $$", 128 + 15),
    ],
)
def test_exit_code_is_cmds_own(podman: Podman, init_image: str, script: str, code: int) -> None:
    got = podman.run(init_image, ["sh", "-c", script], timeout=60)
    assert got.code == code, got.stderr


def test_arguments_arrive_exactly(podman: Podman, init_image: str) -> None:
    got = podman.run(init_image, ["printf", "[%s]\\n", *TRICKY], timeout=60)
    assert got.code == 0, got.stderr
    assert got.stdout == "".join(f"[{arg}]\n" for arg in TRICKY)


def test_echo_hi_prints_exactly_hi(podman: Podman, init_image: str) -> None:
    got = podman.run(init_image, ["echo", "hi"], timeout=60)
    assert (got.code, got.stdout) == (0, "hi\n")


def test_cmd_sees_the_full_environment(podman: Podman, init_image: str) -> None:
    got = podman.run(
        init_image, ["sh", "-c", 'printf "%s|%s\\n" "$FROM_RUN" "$LANG"'], env={"FROM_RUN": "a b"}, timeout=60
    )
    assert got.stdout == "a b|C.UTF-8\n", got.stderr  # -e and the image's ENV, no wrapper needed


def test_logs_written_before_stop_are_on_disk(podman: Podman, init_image: str, tmp_path: Path) -> None:
    app = "i=0; while [ $i -lt 500 ]; do echo before-stop-$i; i=$((i+1)); done; touch /tmp/ready; exec sleep 600"
    name = _start_ready(podman, init_image, app)
    try:
        stopped = podman.stop(name, 10)
        assert stopped.code == 0
        assert podman.copy_out(name, f"{LOG_DIR}/current", tmp_path / "current").code == 0
    finally:
        podman.remove(name)
    kept = (tmp_path / "current").read_text().splitlines()
    assert kept[-1] == "before-stop-499" and len([k for k in kept if k.startswith("before-stop-")]) == 500


def test_entrypoint_override_bypasses_the_init(podman: Podman, init_image: str) -> None:
    got = podman.run(init_image, ["/proc/1/comm"], entrypoint="cat", timeout=60)
    assert got.stdout.strip() == "cat"


@pytest.mark.parametrize(
    "options", [["--read-only", "--tmpfs", "/run"], ["--user", "12345:0"]], ids=["read-only", "arbitrary-uid"]
)
def test_runs_or_says_in_one_line_what_to_mount(podman: Podman, init_image: str, options: list[str]) -> None:
    """Issue 5: runs with --read-only (tmpfs on /run) and with an arbitrary uid in group 0, or fails
    at start with one clear line, and runs once given what that line asks for. (s6-overlay follows
    a failed start with its own fixed notice and its s6-rc warnings, which say nothing more.)"""
    ref = init_image
    got = podman.run(ref, ["sh", "-c", 'echo "$(id -u):$(id -g)"'], options=options, timeout=60)
    if got.code != 0:
        said = [
            line
            for line in got.stderr.splitlines()
            if line.strip() and "warning:" not in line and not line.endswith(OVERLAY_STOP_NOTICE)
        ]
        assert len(said) == 1, got.stderr
        assert "mount" in said[0] or "--tmpfs" in said[0] or "-v " in said[0], said[0]
        # As the line says: :U gives the tmpfs to the container's (non-root) user. A path the
        # options mount already cannot be mounted twice.
        extra = [flag for path in ("/run", LOG_DIR) if path not in options for flag in ("--tmpfs", f"{path}:U")]
        got = podman.run(ref, ["sh", "-c", 'echo "$(id -u):$(id -g)"'], options=options + extra, timeout=60)
        assert got.code == 0, f"still failing after following {said[0]!r}: {got.stderr}"
    if "--user" in options:
        assert got.stdout == "12345:0\n"


def test_stop_with_nothing_left_does_not_sleep_the_grace_time(podman: Podman, init_image: str) -> None:
    """s6-overlay sleeps S6_KILL_GRACETIME at every stop (s6-overlay#628); with a 10 s grace time
    set the stop of an app that exits at once must still be quick. gen's s6-overlay images keep
    gen's grace time in GEN_KILL_GRACETIME and set s6-overlay's own to 0."""
    app = 'trap "exit 0" TERM; touch /tmp/ready; while :; do sleep 1 & wait $!; done'
    grace = "GEN_KILL_GRACETIME" if _on_overlay(init_image) else "S6_KILL_GRACETIME"
    name = podman.start(init_image, ["sh", "-c", app], env={grace: "10000", "S6_SERVICES_GRACETIME": "10000"})
    assert poll(lambda: podman.exec(name, ["test", "-e", "/tmp/ready"]).code == 0, 20)
    seconds, code = _stop(podman, name, grace=30)
    assert code == 0 and seconds < STOP_BOUND, f"stop took {seconds:.2f} s (exit {code})"


def test_s6_overlay_services_are_up_before_cmd_and_stop_after_it(
    podman: Podman, example_images: dict[str, str], tmp_path: Path
) -> None:
    """The overlay spec's service `heartbeat` is an s6-rc longrun with its own logger: up when CMD
    starts, still up while the app stops, and its log complete once the container is gone."""
    if "overlay" not in example_images:
        pytest.skip("no s6-overlay image in this session (its pinned sources are not on this machine)")
    up = "s6-svstat -o up /run/service/heartbeat"
    app = (
        f'echo "at-start:$({up})"; trap \'echo "at-stop:$({up})"; exit 0\' TERM; touch /tmp/ready; '
        "while :; do sleep 1 & wait $!; done"
    )
    name = _start_ready(podman, example_images["overlay"], app)
    try:
        time.sleep(1)  # a few heartbeats
        stopped = podman.stop(name, 10)
        assert stopped.code == 0 and podman.wait(name) == 0
        assert podman.copy_out(name, LOG_DIR, tmp_path / "logs").code == 0
    finally:
        podman.remove(name)
    app_lines = (tmp_path / "logs" / "current").read_text().splitlines()
    assert app_lines == ["at-start:true", "at-stop:true"]
    beats = tmp_path / "logs" / "heartbeat" / "current"
    text = beats.read_text()
    assert text.startswith("beat-start\nbeat\n") and text.endswith("beat\n"), text[-200:]
    assert beats.stat().st_mode & 0o100, "a logger that ended cleanly leaves current executable (complete)"
