"""The checks `gen verify` runs: each starts containers of the image and judges one behaviour.

A check returns a Verdict (status and a one-line detail); verify_image times it and turns it into a
CheckResult. Checks read output from the app's log directory (copied out of the stopped
container), not from podman's stdout, because an image may keep logs off stdout by design.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from generator.builder.proc import ToolError
from generator.plan.hints import HEALTH_SCRIPT, READY_MARKERS
from generator.schema import syslog_facility_code
from generator.verify import structure
from generator.verify.expectations import Expectations, VolumeExpectation
from generator.verify.podman import Outcome, Podman, poll

# Bounds of the checks (behaviour bounds from the issues, not performance targets).
OVERLAY_STOP_NOTICE = "rc.init: fatal: stopping the container."
STOP_BOUND_SECONDS = 2.0
STOP_GRACE_SECONDS = 3  # podman stop --time: past the bound the check fails anyway
# Under qemu user emulation (verify --platform of a foreign architecture) every process of the
# init runs several times slower: 2.55 s was measured for a stop that takes 0.25 s natively, with
# the machine busy. The bound is about the init, not the emulator.
EMULATED_STOP_BOUND_SECONDS = 8.0
EMULATED_STOP_GRACE_SECONDS = 10
READY_TIMEOUT = 20.0
REAP_TIMEOUT = 6.0
RUN_TIMEOUT = 90.0
LOG_RUN_TIMEOUT = 180.0
# Log rotation: limits the check sets at run time, and how much output it writes.
LOG_MAX_SIZE = 100_000
LOG_KEEP = 3
LOG_LINES = 30_000  # 100 bytes each: 3 MB
LOG_LINE_PREFIX = "gen-verify-log "
LOG_LINE_PAD = "." * 76
EXIT_CODE = 7
EXIT_SIGNAL = signal.SIGUSR1
ARBITRARY_USER = "12345:0"
# Arguments a shell would split or expand; they must reach the app exactly.
TRICKY_ARGS = ("two words", "it's", '"double"', "", "$HOME", "*", "back\\slash", "  padded  ")
APP_MARKER = "gen-verify-app-ran"
# Log forwarding: a unix datagram socket of verify's own, mounted into the container.
SYSLOG_MOUNT = "/run/gen-verify-syslog"
SYSLOG_MESSAGE = re.compile(r"^<(\d+)>1 (\S+) (\S+) (\S+) - - - (.*)$", re.DOTALL)


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"  # does not apply to this image (e.g. no volumes declared)


@dataclass(frozen=True)
class Verdict:
    status: Status
    detail: str


def passed(detail: str) -> Verdict:
    return Verdict(Status.PASS, detail)


def failed(detail: str) -> Verdict:
    return Verdict(Status.FAIL, detail)


def skipped(detail: str) -> Verdict:
    return Verdict(Status.SKIP, detail)


@dataclass
class Context:
    """One verification: the image, what it should do, podman, and a scratch directory."""

    podman: Podman
    ref: str
    expect: Expectations
    config: dict  # the image's inspect Config (Entrypoint, Env, Labels)
    workdir: Path
    structure_config: Path | None = None  # output/<name>/structure-test.yaml, when rendered here
    _probe: str | None = None
    _probe_error: str | None = None
    _cleanup: list[str] = field(default_factory=list)

    # --- one-shot runs -----------------------------------------------------------------------

    def run_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for one-shot runs: no timestamps in the log (lines compare exactly), and
        CMD's exit stops the container even where the spec restarts it."""
        env = {"GEN_LOG_TIMESTAMP": "none"}
        if self.expect.restart != "stop":
            env["GEN_RESTART"] = "stop"
        if self.expect.forward_to:  # the spec's collector is not verify's: no run waits on it
            env["GEN_LOG_FORWARD"] = ""
        env.update(extra or {})
        return env

    def run_logged(
        self,
        args: list[str],
        options: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = RUN_TIMEOUT,
    ) -> tuple[Outcome, Path]:
        """Run CMD to its end, then copy the app's log directory out of the stopped container.
        Returns the run and the local copy (missing when the image has no such directory)."""
        name = f"gen-verify-{os.urandom(6).hex()}"
        copy = self.workdir / name
        try:
            outcome = self.podman.run(
                self.ref, args, options=options or [], env=self.run_env(env), timeout=timeout, name=name, remove=False
            )
            self.podman.copy_out(name, self.expect.log_dir, copy)
        finally:
            self.podman.remove(name)
        return outcome, copy

    def app_lines(self, args: list[str], **kwargs) -> tuple[Outcome, list[str] | None]:
        """Run CMD; the lines of the log's `current` (None when there is no log)."""
        outcome, copy = self.run_logged(args, **kwargs)
        current = copy / "current"
        if not current.is_file():
            return outcome, None
        return outcome, [strip_timestamp(line) for line in current.read_text(errors="replace").splitlines()]

    # --- the shared long-running probe -------------------------------------------------------

    def probe(self) -> str:
        """A running container whose app recorded its pid and orphaned a short-lived child;
        started once, shared by the checks that inspect a live container."""
        if self._probe is None and self._probe_error is None:
            try:
                self._probe = self._start_probe()
            except ToolError as exc:
                self._probe_error = str(exc)
        if self._probe is None:
            raise ToolError(self._probe_error or "probe container did not start")
        return self._probe

    def _start_probe(self) -> str:
        script = "echo $$ > /tmp/gen-verify.app; (sleep 1 & echo $! > /tmp/gen-verify.orphan); exec sleep 600"
        name = self.podman.start(self.ref, ["sh", "-c", script], env=self.run_env())
        self._cleanup.append(name)
        self.wait_ready(name, ["cat", "/tmp/gen-verify.app", "/tmp/gen-verify.orphan"])
        return name

    def wait_ready(self, name: str, probe: list[str]) -> None:
        """Wait until `probe` succeeds in the container; raise ToolError, with the container's
        last words, as soon as it has exited or when READY_TIMEOUT has passed."""
        exited: list[int | None] = []

        def ready() -> bool:
            if self.podman.exec(name, probe).code == 0:
                return True
            if not self.podman.running(name):
                exited.append(self.podman.wait(name, timeout=30))
                return True
            return False

        if not poll(ready, READY_TIMEOUT):
            raise ToolError(f"the app did not start within {READY_TIMEOUT:.0f} s")
        if exited:
            said = self.podman.logs_tail(name)
            raise ToolError(
                f"the container exited ({exited[0]}) before the app started" + (f": {said}" if said else "")
            )

    def read_in_probe(self, path: str) -> str | None:
        got = self.podman.exec(self.probe(), ["cat", path])
        return got.stdout if got.code == 0 else None

    def close(self) -> None:
        for name in self._cleanup:
            self.podman.remove(name)
        self._cleanup.clear()


_TIMESTAMP = re.compile(r"^(@[0-9a-f]{24} |\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)? +)")


def strip_timestamp(line: str) -> str:
    """A log line without s6-log's tai64n or ISO 8601 prefix (when an image forces one)."""
    return _TIMESTAMP.sub("", line, count=1)


def _code_detail(outcome: Outcome) -> str:
    line = outcome.last_error_line()
    return f"exit {outcome.code}" + (f": {line}" if line else "")


# --- the checks -------------------------------------------------------------------------------


def check_embedded_spec(ctx: Context) -> Verdict:
    if ctx.expect.found_spec:
        return passed(f"/etc/gen/spec.json: {ctx.expect.name or '?'}, init {ctx.expect.init}")
    if ctx.expect.spec_problem:
        return failed(
            f"/etc/gen/spec.json does not match this gen's schema ({ctx.expect.spec_problem}); "
            "checking against the schema defaults"
        )
    return failed("no readable /etc/gen/spec.json (not a gen image?); checking against the schema defaults")


def check_entrypoint(ctx: Context) -> Verdict:
    entrypoint = ctx.config.get("Entrypoint") or []
    if entrypoint[:1] == ["/init"]:
        return passed(f"ENTRYPOINT {shlex.join(entrypoint)}")
    shown = shlex.join(entrypoint) if entrypoint else "none"
    return failed(f"ENTRYPOINT {shown}: no init layer (expected /init)")


def check_pid1(ctx: Context) -> Verdict:
    comm = ctx.read_in_probe("/proc/1/comm")
    if comm is None:
        return failed("cannot read /proc/1/comm in the running container")
    comm = comm.strip()
    if comm == "s6-svscan":
        return passed("PID 1 is s6-svscan")
    return failed(f"PID 1 is {comm!r}, not the supervisor s6-svscan")


def _status_ids(status: str, field_name: str) -> list[int]:
    for line in status.splitlines():
        if line.startswith(field_name + ":"):
            return [int(x) for x in line.split()[1:]]
    return []


def _resolve_id(ctx: Context, flag: str, user: str) -> int | None:
    got = ctx.podman.exec(ctx.probe(), ["id", flag, user])
    try:
        return int(got.stdout.strip()) if got.code == 0 else None
    except ValueError:
        return None


def check_app_user(ctx: Context) -> Verdict:
    pid = (ctx.read_in_probe("/tmp/gen-verify.app") or "").strip()
    status = ctx.read_in_probe(f"/proc/{pid}/status") if pid.isdigit() else None
    if status is None:
        return failed("cannot find the app's process in the running container")
    uids, gids = _status_ids(status, "Uid"), _status_ids(status, "Gid")
    want_uid = ctx.expect.uid if ctx.expect.uid is not None else _resolve_id(ctx, "-u", ctx.expect.user)
    want_gid = ctx.expect.gid if ctx.expect.gid is not None else _resolve_id(ctx, "-g", ctx.expect.user)
    if want_uid is None or want_gid is None:
        return failed(f"user {ctx.expect.user!r} of the spec does not exist in the image")
    got = f"uid {uids[1] if len(uids) > 1 else '?'} gid {gids[1] if len(gids) > 1 else '?'}"
    if uids[:2] == [want_uid, want_uid] and gids[:2] == [want_gid, want_gid]:
        return passed(f"app runs as {ctx.expect.user} ({got})")
    return failed(f"app runs as {got}, declared {ctx.expect.user} (uid {want_uid} gid {want_gid})")


def _processes(ctx: Context) -> dict[int, tuple[str, int]] | None:
    """pid -> (state, ppid) of every process in the probe container."""
    script = 'for f in /proc/[0-9]*/stat; do read -r l < "$f" && echo "$l"; done 2>/dev/null'
    got = ctx.podman.exec(ctx.probe(), ["sh", "-c", script])
    if got.code != 0:
        return None
    found = {}
    for line in got.stdout.splitlines():
        pid, _, rest = line.partition(" (")
        fields = rest.rpartition(") ")[2].split()
        if pid.isdigit() and len(fields) >= 2 and fields[1].lstrip("-").isdigit():
            found[int(pid)] = (fields[0], int(fields[1]))
    return found


def check_reaping(ctx: Context) -> Verdict:
    orphan = (ctx.read_in_probe("/tmp/gen-verify.orphan") or "").strip()
    if not orphan.isdigit():
        return failed("the app could not record its orphaned child")
    orphan_pid = int(orphan)
    snapshot: dict[int, tuple[str, int]] = {}

    def reaped() -> bool:
        nonlocal snapshot
        snapshot = _processes(ctx) or {}
        zombies = [pid for pid, (state, _) in snapshot.items() if state == "Z"]
        return bool(snapshot) and orphan_pid not in snapshot and not zombies

    if poll(reaped, REAP_TIMEOUT, interval=0.25):
        return passed(f"orphaned child {orphan_pid} was reaped; no zombies")
    zombies = sorted(pid for pid, (state, _) in snapshot.items() if state == "Z")
    if zombies:
        return failed(
            f"zombies after {REAP_TIMEOUT:.0f} s: pids {', '.join(map(str, zombies))} (nothing reaps orphans)"
        )
    return failed(f"orphaned child {orphan_pid} still present after {REAP_TIMEOUT:.0f} s")


def check_stop_time(ctx: Context) -> Verdict:
    """An app that exits 0 on SIGTERM: `podman stop` must return well under the bound, exit 0."""
    script = 'trap "exit 0" TERM; touch /tmp/gen-verify.ready; while :; do sleep 1 & wait $!; done'
    emulated = bool(ctx.podman.run_platform)
    bound, grace = (
        (EMULATED_STOP_BOUND_SECONDS, EMULATED_STOP_GRACE_SECONDS)
        if emulated
        else (STOP_BOUND_SECONDS, STOP_GRACE_SECONDS)
    )
    name = ctx.podman.start(ctx.ref, ["sh", "-c", script], env=ctx.run_env())
    try:
        ctx.wait_ready(name, ["test", "-e", "/tmp/gen-verify.ready"])
        stopped = ctx.podman.stop(name, grace)
        code = ctx.podman.wait(name)
    finally:
        ctx.podman.remove(name)
    took = f"stop took {stopped.seconds:.2f} s, exit {code}"
    if stopped.code != 0:
        return failed(f"podman stop failed: {_code_detail(stopped)}")
    if stopped.seconds >= bound:
        where = " under emulation" if emulated else ""
        return failed(f"{took}: SIGTERM did not end the container (bound {bound:.0f} s{where})")
    if code != 0:
        return failed(f"{took}: the app exited 0 on SIGTERM, the container did not")
    return passed(took)


def check_exit_code(ctx: Context) -> Verdict:
    got = ctx.podman.run(ctx.ref, ["sh", "-c", f"exit {EXIT_CODE}"], env=ctx.run_env(), timeout=RUN_TIMEOUT)
    if got.code == EXIT_CODE:
        return passed(f"CMD `exit {EXIT_CODE}` -> container exit {got.code}")
    return failed(f"CMD `exit {EXIT_CODE}` -> container {_code_detail(got)}")


def check_exit_signal(ctx: Context) -> Verdict:
    want = 128 + EXIT_SIGNAL.value
    got = ctx.podman.run(
        ctx.ref, ["sh", "-c", f"kill -{EXIT_SIGNAL.name[3:]} $$"], env=ctx.run_env(), timeout=RUN_TIMEOUT
    )
    if got.code == want:
        return passed(f"CMD killed by {EXIT_SIGNAL.name} -> exit {got.code} (128+{EXIT_SIGNAL.value})")
    return failed(f"CMD killed by {EXIT_SIGNAL.name} -> {_code_detail(got)}, expected {want}")


def _marked(lines: list[str], marker: str) -> list[str]:
    return [line[len(marker) :] for line in lines if line.startswith(marker)]


def check_args(ctx: Context) -> Verdict:
    marker = "gen-verify-arg:"
    outcome, lines = ctx.app_lines(["printf", f"{marker}[%s]\\n", *TRICKY_ARGS])
    if outcome.code != 0:
        return failed(f"printf with quoted arguments: {_code_detail(outcome)}")
    if lines is None:
        return failed(f"no {ctx.expect.log_dir}/current to read the app's output from")
    got = _marked(lines, marker)
    want = [f"[{arg}]" for arg in TRICKY_ARGS]
    if got == want:
        return passed(f"{len(TRICKY_ARGS)} arguments with spaces, quotes, $ and * arrived intact")
    return failed(f"arguments changed: sent {want}, app saw {got}")


def check_environment(ctx: Context) -> Verdict:
    """CMD sees `-e` variables and the image's ENV, without any wrapper."""
    marker = "gen-verify-env:"
    value = "a value with spaces"
    outcome, lines = ctx.app_lines(["sh", "-c", f'env | sed "s/^/{marker}/"'], env={"GEN_VERIFY_VALUE": value})
    if lines is None or outcome.code != 0:
        return failed(f"cannot read the app's environment: {_code_detail(outcome)}")
    seen = dict(line.partition("=")[::2] for line in _marked(lines, marker))
    image_env = dict(item.partition("=")[::2] for item in ctx.config.get("Env") or [])
    overridden = ("PATH", "HOME", *ctx.run_env())  # the runs' own -e values replace the image's
    wanted = {k: v for k, v in image_env.items() if k not in overridden}
    wanted.update(ctx.expect.default_profile_env())  # the default profile's values win over ENV
    wanted["GEN_VERIFY_VALUE"] = value
    missing = sorted(k for k, v in wanted.items() if seen.get(k) != v)
    if missing:
        return failed(f"CMD does not see {', '.join(missing)} as set by -e/ENV")
    return passed(f"CMD sees -e and all {len(wanted) - 1} ENV variable(s)")


def check_echo(ctx: Context) -> Verdict:
    """`podman run IMAGE echo hi`: exactly `hi` on stdout when logs go there, nothing otherwise."""
    got = ctx.podman.run(ctx.ref, ["echo", "hi"], timeout=RUN_TIMEOUT)
    want = "hi\n" if ctx.expect.log_stdout else ""
    where = "logging.stdout on" if ctx.expect.log_stdout else "logging.stdout off"
    if got.code == 0 and got.stdout == want:
        return passed(f"stdout {got.stdout!r} ({where})")
    return failed(f"stdout {got.stdout[:80]!r}, expected {want!r} ({where}); {_code_detail(got)}")


def _log_line(n: int) -> str:
    return f"{LOG_LINE_PREFIX}{n:07d} {LOG_LINE_PAD}"


def check_log_rotation(ctx: Context) -> Verdict:
    """3 MB through the log with a 100 kB limit and keep=3: `current` plus exactly 3 archives,
    none over the limit, and the newest lines contiguous up to the last one (nothing lost)."""
    env = {"GEN_LOG_MAX_SIZE": str(LOG_MAX_SIZE), "GEN_LOG_KEEP": str(LOG_KEEP), "GEN_LOG_STDOUT": "0"}
    fmt = f"{LOG_LINE_PREFIX}%07.0f {LOG_LINE_PAD}"
    outcome, copy = ctx.run_logged(["seq", "-f", fmt, "1", str(LOG_LINES)], env=env, timeout=LOG_RUN_TIMEOUT)
    if outcome.code != 0:
        return failed(f"writing {LOG_LINES} lines: {_code_detail(outcome)}")
    if not (copy / "current").is_file():
        return failed(f"no {ctx.expect.log_dir}/current after the app wrote 3 MB")
    return judge_log_dir(copy, LOG_MAX_SIZE, LOG_KEEP, LOG_LINES)


def judge_log_dir(directory: Path, max_size: int, keep: int, last: int) -> Verdict:
    archives = sorted(p for p in directory.iterdir() if p.name.startswith("@") and p.is_file())
    files = [*archives, directory / "current"]
    too_big = [f"{p.name} {p.stat().st_size} B" for p in files if p.stat().st_size > max_size]
    sizes = f"current {files[-1].stat().st_size} B + {len(archives)} archive(s)"
    if len(archives) != keep:
        return failed(f"{len(archives)} archive(s), expected {keep} ({sizes})")
    if too_big:
        return failed(f"over the {max_size} B limit: {', '.join(too_big)}")
    numbers: list[int] = []
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            line = strip_timestamp(line)
            if not line.startswith(LOG_LINE_PREFIX):
                continue
            n = line[len(LOG_LINE_PREFIX) : len(LOG_LINE_PREFIX) + 7]
            if not n.isdigit() or line != _log_line(int(n)):
                return failed(f"damaged line in {path.name}: {line[:60]!r}")
            numbers.append(int(n))
    if not numbers or numbers[-1] != last:
        return failed(f"the newest line is {numbers[-1] if numbers else 'missing'}, expected {last} (output lost)")
    if numbers != list(range(numbers[0], last + 1)):
        return failed("the kept lines are not contiguous (lines lost or reordered)")
    return passed(f"{sizes}, each <= {max_size} B; lines {numbers[0]}..{last} intact")


def _runs_or_explains(ctx: Context, options: list[str], script: str) -> Verdict:
    """The image runs with `options`, or (as the issue allows) fails at start with one clear line,
    and then runs once given the writable places such a line asks for: /run and the log dir."""
    shown = " ".join(options)
    got = ctx.podman.run(ctx.ref, ["sh", "-c", script], options=options, env=ctx.run_env(), timeout=RUN_TIMEOUT)
    if got.code == 0:
        return passed(f"runs with {shown}")
    # Warnings (e.g. a sysctl the policy lets pass) may come first; the reason must be one line.
    # s6-overlay's stage 2 always follows a failed start-up with its own fixed notice.
    said = [
        line.strip()
        for line in got.stderr.splitlines()
        if line.strip() and "warning:" not in line and not line.strip().endswith(OVERLAY_STOP_NOTICE)
    ]
    if len(said) != 1:
        return failed(
            f"with {shown}: exit {got.code} and {len(said)} line(s) on stderr, expected it to run "
            f"or say in one line what to change: {' / '.join(said)[:300]}"
        )
    # :U gives the tmpfs to the container's user; podman's is root's otherwise, whatever its mode.
    extra = [flag for path in ("/run", ctx.expect.log_dir) if path not in options for flag in ("--tmpfs", f"{path}:U")]
    again = ctx.podman.run(
        ctx.ref, ["sh", "-c", script], options=options + extra, env=ctx.run_env(), timeout=RUN_TIMEOUT
    )
    if again.code == 0:
        return passed(f"with {shown} it says {said[0]!r}; runs with {' '.join(extra)} added")
    return failed(f"with {shown}: {said[0]!r}; still {_code_detail(again)} with {' '.join(extra)} added")


def check_read_only(ctx: Context) -> Verdict:
    return _runs_or_explains(ctx, ["--read-only", "--tmpfs", "/run"], "exit 0")


def check_arbitrary_uid(ctx: Context) -> Verdict:
    """OpenShift style: an arbitrary uid in group 0; the app must run as that uid."""
    uid, gid = ARBITRARY_USER.split(":")
    script = f'test "$(id -u)" = {uid} && test "$(id -g)" = {gid}'
    return _runs_or_explains(ctx, ["--user", ARBITRARY_USER], script)


def _starts_as_root(config: dict) -> bool:
    return (config.get("User") or "root").split(":")[0] in ("", "0", "root")


def _write_to_root_owned_mount(ctx: Context, volume: VolumeExpectation, options: list[str]) -> tuple[Outcome, Path]:
    """Run the app with a fresh root-owned host directory on the volume; it touches a file there."""
    host_dir = ctx.workdir / f"volume-{os.urandom(4).hex()}"
    host_dir.mkdir(mode=0o755)
    os.chmod(host_dir, 0o755)
    got = ctx.podman.run(
        ctx.ref,
        ["sh", "-c", 'touch "$1/.gen-verify-write"', "sh", volume.path],
        options=[*options, "--volume", f"{host_dir}:{volume.path}"],
        env=ctx.run_env(),
        timeout=RUN_TIMEOUT,
    )
    return got, host_dir / ".gen-verify-write"


def check_volumes(ctx: Context) -> Verdict:
    """A root-owned host directory mounted on each declared volume becomes writable by the app
    when PID 1 starts as root (the image's USER, or --user 0 for an image that runs as non-root);
    started as its non-root user, the image must say which volume it cannot re-own and how."""
    fixed = [v for v in ctx.expect.volumes if v.fix_ownership]
    if not fixed:
        return skipped("no volume with fix_ownership declared")
    root_start = [] if _starts_as_root(ctx.config) else ["--user", "0"]
    notes = []
    for volume in fixed:
        if root_start:
            got, probe = _write_to_root_owned_mount(ctx, volume, [])
            if not probe.exists() and not (volume.path in got.stderr and "--user 0" in got.stderr):
                return failed(
                    f"{volume.path}: started as non-root, the app cannot write a root-owned bind "
                    f"mount and nothing says why: {_code_detail(got)}"
                )
        got, probe = _write_to_root_owned_mount(ctx, volume, root_start)
        if got.code != 0 or not probe.exists():
            started = " started with --user 0" if root_start else ""
            return failed(
                f"{volume.path}: a root-owned bind mount is not writable by the app{started}: {_code_detail(got)}"
            )
        owner = probe.stat().st_uid
        if volume.uid is not None and owner != volume.uid:
            return failed(
                f"{volume.path}: the app's file is owned by uid {owner}, declared {volume.owner} ({volume.uid})"
            )
        notes.append(f"{volume.path} (owner uid {probe.parent.stat().st_uid})")
    how = "with --user 0 (started as its user, it says how)" if root_start else "as the image starts"
    return passed(f"root-owned bind mount writable by the app {how}: " + ", ".join(notes))


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def _same_value(a: str, b: str) -> bool:
    return a.split() == b.split()  # kernel.sem and friends: tab- or space-separated fields


def _read_sysctls_script(marker: str) -> str:
    return f'for k do printf "{marker}%s=%s\\n" "$k" "$(cat "/proc/sys/$(echo "$k" | tr . /)")"; done'


def check_sysctls_runtime(ctx: Context) -> Verdict:
    """Run with the `--sysctl` flags `gen hints` prints; the app must read the declared values."""
    settable = ctx.expect.settable_sysctls()
    if not settable:
        return skipped("no namespaced sysctls declared")
    marker = "gen-verify-sysctl:"
    flags = ctx.expect.sysctl_run_flags(ctx.ref)
    outcome, lines = ctx.app_lines(
        ["sh", "-c", _read_sysctls_script(marker), "sh", *(k for k, _ in settable)], options=flags
    )
    if outcome.code != 0 or lines is None:
        return failed(f"with {' '.join(flags)}: {_code_detail(outcome)}")
    seen = dict(line.partition("=")[::2] for line in _marked(lines, marker))
    wrong = [f"{k}={seen.get(k, '?')} (declared {v})" for k, v in settable if not _same_value(seen.get(k, ""), v)]
    if wrong:
        return failed("app reads " + ", ".join(wrong))
    return passed(f"app reads {', '.join(f'{k}={v}' for k, v in settable)} with {' '.join(flags)}")


def _runtime_defaults(ctx: Context, keys: list[str]) -> dict[str, str]:
    """Values a container gets without --sysctl, read with the init layer bypassed."""
    marker = "gen-verify-sysctl:"
    got = ctx.podman.run(
        ctx.ref, ["-c", _read_sysctls_script(marker), "sh", *keys], entrypoint="/bin/sh", timeout=RUN_TIMEOUT
    )
    return dict(line.partition("=")[::2] for line in _marked(got.stdout.splitlines(), marker))


def check_sysctl_policy(ctx: Context) -> Verdict:
    """Without --sysctl the hook cannot write /proc/sys: `fail` and `skip-if-equal` must stop the
    container non-zero naming the key; `warn` must name it and run the app."""
    if not ctx.expect.sysctls:
        return skipped("no sysctls declared")
    policy = ctx.expect.sysctl_policy
    defaults = _runtime_defaults(ctx, [k for k, _ in ctx.expect.sysctls])
    differing = [k for k, v in ctx.expect.sysctls if not _same_value(defaults.get(k, ""), v)]
    if not differing:
        return skipped("every declared sysctl already has its value without --sysctl")
    outcome, lines = ctx.app_lines(["sh", "-c", f"echo {APP_MARKER}"])
    said = "\n".join([outcome.stdout, outcome.stderr, *(lines or [])])
    ran = APP_MARKER in (lines or []) or APP_MARKER in outcome.stdout.splitlines()
    named = [k for k in differing if k in said]
    if not named:
        return failed(f"policy {policy}: no message names {', '.join(differing)} ({_code_detail(outcome)})")
    if policy == "warn":
        if outcome.code == 0 and ran:
            return passed(f"policy warn: warned about {', '.join(named)}, app ran, exit 0")
        return failed(f"policy warn: app must still run: ran={ran}, {_code_detail(outcome)}")
    if outcome.code != 0 and not ran:
        return passed(f"policy {policy}: exit {outcome.code} before the app, naming {', '.join(named)}")
    return failed(f"policy {policy}: expected a non-zero exit before the app; ran={ran}, {_code_detail(outcome)}")


def check_profiles(ctx: Context) -> Verdict:
    """Each declared profile, chosen with GEN_PROFILE, gives CMD its env; an unknown one stops
    the start naming the known ones."""
    if not ctx.expect.profiles:
        return skipped("no profiles declared")
    marker = "gen-verify-env:"
    for name, env in ctx.expect.profiles:
        outcome, lines = ctx.app_lines(["sh", "-c", f'env | sed "s/^/{marker}/"'], env={"GEN_PROFILE": name})
        if lines is None or outcome.code != 0:
            return failed(f"profile {name}: cannot read the app's environment: {_code_detail(outcome)}")
        seen = dict(line.partition("=")[::2] for line in _marked(lines, marker))
        wrong = [f"{k}={seen.get(k, '(unset)')} (profile: {v})" for k, v in env if seen.get(k) != v]
        if wrong:
            return failed(f"profile {name}: CMD sees " + ", ".join(wrong))
    unknown = ctx.podman.run(ctx.ref, ["true"], env=ctx.run_env({"GEN_PROFILE": "gen-verify-unknown"}))
    if unknown.code == 0 or "known:" not in unknown.stderr:
        return failed(f"an unknown profile did not stop the start naming the known ones: {_code_detail(unknown)}")
    names = ", ".join(name for name, _ in ctx.expect.profiles)
    return passed(f"CMD gets the env of each profile ({names}); an unknown one stops the start")


def check_readiness(ctx: Context) -> Verdict:
    """An image whose CMD or services declare readiness, started as it ships (its own CMD): the
    start-up marker must appear within the longest readiness timeout, and the generated health
    check must then say healthy."""
    if ctx.expect.ready_timeout_ms is None:
        return skipped("no readiness declared")
    if ctx.expect.init == "none":
        return skipped("readiness needs an init layer; this image has none")
    limit = ctx.expect.ready_timeout_ms / 1000 + READY_TIMEOUT
    probe = ["sh", "-c", " || ".join(f"test -e {marker}" for marker in READY_MARKERS)]
    name = ctx.podman.start(ctx.ref, [], env=ctx.run_env())
    try:
        started = time.monotonic()
        ready = poll(lambda: ctx.podman.exec(name, probe).code == 0 or not ctx.podman.running(name), limit)
        took = time.monotonic() - started
        if not ctx.podman.running(name):
            said = ctx.podman.logs_tail(name)
            return failed("the container exited before start-up finished" + (f": {said}" if said else ""))
        if not ready:
            health = ctx.podman.exec(name, [HEALTH_SCRIPT])
            return failed(f"not ready after {limit:.0f} s; {health.stdout.strip() or _code_detail(health)}")
        health = ctx.podman.exec(name, [HEALTH_SCRIPT])
    finally:
        ctx.podman.remove(name)
    if health.code != 0:
        return failed(f"ready after {took:.1f} s, but the health check says {health.stdout.strip() or health.code}")
    return passed(f"ready after {took:.1f} s; health check: {health.stdout.strip()}")


def _collect(collector: socket.socket, into: list[str], done: threading.Event) -> None:
    """Every datagram until done is set and the queue is empty."""
    collector.settimeout(0.2)
    while True:
        try:
            into.append(collector.recv(65536).decode(errors="replace"))
        except TimeoutError:
            if done.is_set():
                return
        except OSError:
            return


def check_log_forwarding(ctx: Context) -> Verdict:
    """The image forwards CMD's lines as RFC 5424 messages (its name as APP-NAME, the spec's
    facility): pointed at a unix datagram socket of verify's own instead of the spec's collector."""
    if not ctx.expect.forward_to:
        return skipped("no logging.forward declared")
    where = ctx.workdir / "syslog"
    where.mkdir(mode=0o755, exist_ok=True)
    token = f"gen-verify-forwarded-{os.urandom(4).hex()}"
    received: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as collector:
        collector.bind(str(where / "log.sock"))
        (where / "log.sock").chmod(0o666)  # the logger runs as the log directory's owner
        # Read while the container runs: a unix datagram queue holds about ten messages, and a
        # chatty service would otherwise block every logger's forwarding.
        done = threading.Event()
        reader = threading.Thread(target=_collect, args=(collector, received, done), daemon=True)
        reader.start()
        outcome = ctx.podman.run(
            ctx.ref,
            ["echo", token],
            options=["-v", f"{where}:{SYSLOG_MOUNT}"],
            env=ctx.run_env({"GEN_LOG_FORWARD": f"unix://{SYSLOG_MOUNT}/log.sock"}),
            timeout=RUN_TIMEOUT,
        )
        done.set()
        reader.join(10)
    if outcome.code != 0:
        return failed(f"echo {token}: {_code_detail(outcome)}")
    messages = [m for m in map(SYSLOG_MESSAGE.match, received) if m and m.group(5) == token]
    if not messages:
        return failed(f"no message with the app's line arrived ({len(received)} others): {received[:1]}")
    pri, app = int(messages[0].group(1)), messages[0].group(4)
    expected_pri = syslog_facility_code(ctx.expect.forward_facility) * 8 + 6
    if (pri, app) != (expected_pri, ctx.expect.name):
        return failed(f"PRI {pri}, APP-NAME {app}; expected {expected_pri} and {ctx.expect.name}")
    return passed(f"CMD's line arrived as RFC 5424 (APP-NAME {app}, PRI {pri}); spec's target: {ctx.expect.forward_to}")


def check_structure(ctx: Context) -> Verdict:
    """The image's generated container-structure-test config (accounts, volumes, packages, metadata)."""
    if ctx.structure_config is None or not ctx.structure_config.is_file():
        return skipped("no structure-test.yaml for this image under output/ (gen render writes one)")
    if structure.tool_path() is None:
        return failed(structure.MISSING_TOOL_MESSAGE)
    report = structure.run_structure_test(ctx.podman.host, ctx.ref, ctx.structure_config)
    if report.passed:
        return passed(f"{report.detail} ({ctx.structure_config.parent.name}/{ctx.structure_config.name})")
    if not report.cases:
        return failed(report.detail)
    first = report.failures[0]
    return failed(
        f"{report.detail}: {', '.join(c.name for c in report.failures)}; "
        f"{first.errors[0] if first.errors else ''}".rstrip("; ")
    )


CheckFunction = Callable[[Context], Verdict]

# Table order: what the image is, then the live container, then one-shot runs.
CHECKS: tuple[tuple[str, CheckFunction], ...] = (
    ("embedded spec", check_embedded_spec),
    ("init entrypoint", check_entrypoint),
    ("PID 1 supervisor", check_pid1),
    ("app user", check_app_user),
    ("orphans reaped", check_reaping),
    ("SIGTERM stop", check_stop_time),
    ("exit code", check_exit_code),
    ("exit on signal", check_exit_signal),
    ("arguments intact", check_args),
    ("environment", check_environment),
    ("echo hi", check_echo),
    ("log rotation", check_log_rotation),
    ("read-only root", check_read_only),
    ("arbitrary uid", check_arbitrary_uid),
    ("volume ownership", check_volumes),
    ("sysctls via --sysctl", check_sysctls_runtime),
    ("sysctl policy", check_sysctl_policy),
    ("profiles", check_profiles),
    ("readiness and health", check_readiness),
    ("log forwarding", check_log_forwarding),
    ("structure test", check_structure),
)
