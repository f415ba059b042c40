"""The checks of a foreign platform, in `gen doctor` and up front in `gen build`: qemu for its RUN
steps, and arch-test, without which mmdebstrap refuses to bootstrap a foreign architecture (exit 25,
minutes into `./build-examples`, after the native images)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from generator.builder import doctor, engine
from generator.builder.host import Host
from generator.builder.outputs import expand_platforms, load_outputs
from tests.conftest import CHILD_SPEC, TWO_PLATFORM_ROOT_SPEC, render_specs

AMD64, ARM64, ARMV7 = "linux/amd64", "linux/arm64", "linux/arm/v7"
# Fake arch-tests, as the real one answers on an amd64 host: `-n ARCH` (without emulation) fails
# for a foreign ARCH, `ARCH` passes or fails as qemu allows; NATIVE: an ARCH the CPU runs itself.
_NOT_NATIVE = 'if [ "$1" = -n ]; then echo "$2: not supported on this machine/kernel"; exit 1; fi'
PASSING = _NOT_NATIVE + '\necho "$1: ok"'
FAILING = 'echo "${2:-$1}: not supported on this machine/kernel"; exit 1'
NATIVE = 'echo "${2:-$1}: ok"'


def _units(output: Path, host: str = AMD64) -> list:
    return list(expand_platforms(load_outputs(output), host).values())


def _binfmt(tmp_path: Path, *handlers: str) -> Path:
    """A binfmt_misc directory with these qemu handlers enabled, F flag set."""
    directory = tmp_path / "binfmt"
    directory.mkdir()
    (directory / "register").write_text("")
    (directory / "status").write_text("enabled\n")
    for handler in handlers:
        (directory / handler).write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/x\nflags: PF\n")
    return directory


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    """PATH holds only fake tools: the static qemus; a test adds arch-test or leaves it out."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for qemu in ("qemu-aarch64-static", "qemu-arm-static"):
        _script(directory / qemu, "exit 0")
    monkeypatch.setenv("PATH", str(directory))
    return directory


def _arch_test(fake_bin: Path, body: str) -> Path:
    """A fake arch-test that logs its arguments; returns the log."""
    calls = fake_bin.parent / "arch-test.calls"
    _script(fake_bin / "arch-test", f'echo "$*" >> {calls}\n{body}')
    return calls


def _by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


# --- the checks ---------------------------------------------------------------------------------


def test_a_missing_arch_test_is_a_problem_with_its_install_command(tmp_path, fake_bin):
    checks = _by_name(doctor.platform_checks(ARM64, True, _binfmt(tmp_path, "qemu-aarch64")))
    assert not checks["qemu linux/arm64"].problem
    missing = checks["arch-test linux/arm64"]
    assert missing.problem and missing.platform == ARM64
    assert "arch-test is not installed" in missing.detail and "arm64" in missing.detail
    assert missing.fix == "apt-get install arch-test"


def test_a_failing_arch_test_is_a_problem_with_its_output(tmp_path, fake_bin):
    calls = _arch_test(fake_bin, FAILING)
    check = _by_name(doctor.platform_checks(ARM64, True, _binfmt(tmp_path, "qemu-aarch64")))["arch-test linux/arm64"]
    assert check.problem and "arm64: not supported on this machine/kernel" in check.detail
    assert "update-binfmts --enable qemu-aarch64" in check.fix and doctor.QEMU_INSTALL in check.fix
    assert calls.read_text().splitlines() == ["-n arm64", "arm64"]


def test_a_passing_arch_test_is_ok(tmp_path, fake_bin):
    calls = _arch_test(fake_bin, PASSING)
    checks = doctor.platform_checks(ARM64, True, _binfmt(tmp_path, "qemu-aarch64"))
    assert [(c.name, c.status, c.detail) for c in checks][1] == ("arch-test linux/arm64", "ok", "arm64: ok")
    assert not any(c.problem for c in checks) and calls.read_text().splitlines() == ["-n arm64", "arm64"]


def test_arch_test_gets_debians_name_for_the_platform(tmp_path, fake_bin):
    output = render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC.replace("linux/arm64", "linux/arm/v7"))
    assert doctor.foreign_platform_bootstraps(_units(output), AMD64) == {ARMV7: True}
    calls = _arch_test(fake_bin, PASSING)
    assert doctor.build_problems(_units(output), AMD64, binfmt_dir=_binfmt(tmp_path, "qemu-arm")) == []
    assert calls.read_text().splitlines() == ["-n armhf", "armhf"]


def test_arch_test_waits_for_qemu(tmp_path, fake_bin):
    (fake_bin / "qemu-aarch64-static").unlink()
    calls = _arch_test(fake_bin, PASSING)
    checks = _by_name(doctor.platform_checks(ARM64, True, _binfmt(tmp_path)))
    assert checks["qemu linux/arm64"].problem and checks["qemu linux/arm64"].fix == doctor.QEMU_INSTALL
    assert checks["arch-test linux/arm64"].status == "info"
    assert calls.read_text().splitlines() == ["-n arm64"]  # only whether it runs without qemu


def test_an_architecture_the_cpu_runs_itself_needs_no_qemu(tmp_path, fake_bin):
    """i386 on amd64, armhf on many arm64 hosts: arch-test -n passes and qemu is not asked for."""
    calls = _arch_test(fake_bin, NATIVE)
    checks = doctor.platform_checks("linux/386", True, _binfmt(tmp_path))
    assert [(c.status, c.platform) for c in checks] == [("ok", "linux/386")] and "i386: ok" in checks[0].detail
    assert calls.read_text().splitlines() == ["-n i386"]


def test_arch_test_is_read_from_stdout_as_mmdebstrap_reads_it(tmp_path, fake_bin):
    _arch_test(fake_bin, PASSING.replace('echo "$1: ok"', 'echo "$1: ok"; echo "warning: setlocale" >&2'))
    assert not any(c.problem for c in doctor.platform_checks(ARM64, True, _binfmt(tmp_path, "qemu-aarch64")))


def test_native_only_builds_run_no_arch_test(tmp_path, fake_bin, monkeypatch):
    calls = _arch_test(fake_bin, FAILING)

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a native-only build ran {args}")

    monkeypatch.setattr(doctor, "run_quiet", no_subprocess)
    output = render_specs(
        tmp_path, root=TWO_PLATFORM_ROOT_SPEC.replace("linux/amd64, linux/arm64", "linux/amd64"), child=CHILD_SPEC
    )
    assert doctor.foreign_platform_bootstraps(_units(output), AMD64) == {}
    assert doctor.build_problems(_units(output), AMD64, binfmt_dir=tmp_path / "no-binfmt") == []
    assert not calls.exists()


def test_arch_test_only_where_mmdebstrap_bootstraps(tmp_path):
    units = _units(render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC, child=CHILD_SPEC))
    assert doctor.foreign_platform_bootstraps(units, AMD64) == {ARM64: True}
    # A child's units alone (its root is built already): qemu for its RUN steps, no bootstrap.
    assert doctor.foreign_platform_bootstraps([u for u in units if u.repo == "child"], AMD64) == {ARM64: False}
    # The root's arm64 rootfs already in storage: nothing to bootstrap either.
    assert doctor.foreign_platform_bootstraps(units, AMD64, base_stored=lambda unit: True) == {ARM64: False}
    # On an arm64 host amd64 is the foreign one.
    arm_host = list(expand_platforms(load_outputs(tmp_path / "output"), ARM64).values())
    assert doctor.foreign_platform_bootstraps(arm_host, ARM64) == {AMD64: True}


def test_podman_init_needs_catatonit_where_podman_looks(tmp_path):
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    host = Host(base_env={"CONTAINERS_CONF": str(conf)})
    assert doctor.podman_init_path(host.env) == doctor.PODMAN_INIT_DEFAULT
    catatonit = tmp_path / "catatonit"
    conf.write_text(f'[containers]\ninit_path = "{catatonit}"\n')
    missing = doctor.check_podman_init(host)
    # gen never passes --init; only bench/run does, so its absence is a warning.
    assert missing.name == "podman --init" and missing.status == "warning" and str(catatonit) in missing.detail
    assert missing.fix.startswith("apt-get install catatonit")
    _script(catatonit, "exit 0")
    assert doctor.check_podman_init(host).status == "ok"


# --- the commands -------------------------------------------------------------------------------


def _app():
    from generator.cli import app

    return app


def test_gen_doctor_reports_a_missing_arch_test(tmp_path, fake_bin, monkeypatch):
    render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC)
    monkeypatch.setattr(doctor, "host_platform", lambda: AMD64)
    monkeypatch.setattr(doctor, "BINFMT_DIR", _binfmt(tmp_path, "qemu-aarch64"))
    monkeypatch.setattr(doctor, "check_tools", lambda host: [doctor.Check("podman", "ok", "fake")])
    monkeypatch.setattr(doctor, "check_storage", lambda host: doctor.Check("storage", "ok", "fake"))
    monkeypatch.setattr(doctor, "check_rlimits", lambda host, image: doctor.Check("podman run", "ok", "fake"))
    monkeypatch.setattr(doctor, "check_podman_init", lambda host: doctor.Check("podman --init", "ok", "fake"))
    monkeypatch.setattr(doctor, "check_mirror", lambda host: doctor.Check("mirror", "ok", "fake"))
    monkeypatch.setattr(doctor, "probe_image", lambda host: None)
    result = CliRunner().invoke(_app(), ["doctor", "-C", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "PROBLEM arch-test linux/arm64: arch-test is not installed" in result.stdout
    assert "fix: apt-get install arch-test" in result.stdout and "1 problem(s)" in result.stdout
    as_json = CliRunner().invoke(_app(), ["doctor", "-C", str(tmp_path), "--json"])
    assert as_json.exit_code == 1, as_json.output
    report = json.loads(as_json.stdout)
    assert report["problems"] == 1
    [missing] = [c for c in report["checks"] if c["status"] == "problem"]
    assert missing["name"] == "arch-test linux/arm64" and missing["fix"] == "apt-get install arch-test"


@pytest.fixture
def build_cli(tmp_path, fake_bin, monkeypatch):
    """`gen build` on a rendered amd64+arm64 chain, amd64 host, qemu in place; records what it
    would build instead of running buildah, mmdebstrap or podman."""
    render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC, child=CHILD_SPEC)
    monkeypatch.setattr(engine, "host_platform", lambda: AMD64)
    monkeypatch.setattr(doctor, "BINFMT_DIR", _binfmt(tmp_path, "qemu-aarch64"))
    started: list[str] = []

    def build(self, names):
        started.append("build")
        return engine.BuildReport()

    def plan(self, names):
        """Everything would be built, the arm64 rootfs bootstrapped (none stored)."""
        return [engine.PlannedImage(n, "build", ("new",), None, None, (), None) for n in self.closure(names)]

    monkeypatch.setattr(engine.Builder, "build", build)
    monkeypatch.setattr(engine.Builder, "plan", plan)
    monkeypatch.setattr(engine.Builder, "base_id", lambda self, image, index=None: None)
    monkeypatch.setattr(engine, "run_logged", lambda *a, **k: started.append("run_logged") or (1, []))

    def invoke(*args: str):
        return CliRunner().invoke(
            _app(), ["build", "-C", str(tmp_path), "--storage-root", str(tmp_path / "storage"), *args]
        )

    return invoke, started


def test_gen_build_stops_before_building_without_arch_test(build_cli):
    invoke, started = build_cli
    result = invoke()
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: linux/arm64: arch-test is not installed (mmdebstrap needs it to bootstrap arm64); "
        "fix: apt-get install arch-test"
    ]
    assert started == []
    assert invoke("child", "--platform", ARM64).exit_code == 2 and started == []


def test_gen_build_of_native_platforms_needs_no_arch_test(build_cli):
    invoke, started = build_cli
    result = invoke("--platform", AMD64)
    assert result.exit_code == 0, result.output
    assert "arch-test" not in result.output and started == ["build"]


def test_gen_build_dry_run_only_warns(build_cli, fake_bin):
    invoke, started = build_cli
    result = invoke("--dry-run")
    assert result.exit_code == 0, result.output
    assert "warning: linux/arm64: arch-test is not installed" in result.stderr and started == []
    _arch_test(fake_bin, PASSING)
    result = invoke()
    assert result.exit_code == 0 and "arch-test" not in result.output and started == ["build"]


def test_gen_build_of_a_child_on_a_stored_parent_needs_no_arch_test(build_cli, monkeypatch):
    """A CI job pulls the parent for arm64 and builds the child: nothing is bootstrapped."""
    invoke, started = build_cli
    monkeypatch.setattr(
        engine.Builder,
        "plan",
        lambda self, names: [
            engine.PlannedImage(n, "build" if n.startswith("child") else "skip", (), None, None, (), None)
            for n in self.closure(names)
        ],
    )
    result = invoke("child", "--platform", ARM64)
    assert result.exit_code == 0, result.output
    assert started == ["build"]


def test_gen_rebuild_checks_the_stale_foreign_platforms_before_building(tmp_path, fake_bin, monkeypatch):
    """The scheduled rebuild builds through the same engine: the same check, before any image."""
    from generator.errors import HostError
    from generator.rebuild import scheduled as rebuild

    output = render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC, child=CHILD_SPEC)
    monkeypatch.setattr(rebuild, "host_platform", lambda: AMD64)
    monkeypatch.setattr(doctor, "BINFMT_DIR", _binfmt(tmp_path, "qemu-aarch64"))
    stale = {"root"}
    monkeypatch.setattr(
        rebuild,
        "assess",
        lambda ctx, lock: [
            rebuild.Verdict(n, [{"code": "inputs", "detail": "spec changed"}] if n in stale else [])
            for n in ("root", "child")
        ],
    )
    built: list[str] = []
    monkeypatch.setattr(rebuild, "run_rebuild", lambda ctx, verdicts, lock: built.append("run") or [])
    monkeypatch.setattr(rebuild.storage, "exists", lambda host, ref: False)
    ctx = rebuild.RebuildContext(Host(), tmp_path, load_outputs(output), "localhost/gen", None)
    with pytest.raises(HostError, match=r"^linux/arm64: arch-test is not installed"):
        rebuild.rebuild(ctx, dry_run=False)
    assert built == []
    rebuild.rebuild(ctx, dry_run=True)  # a dry run builds nothing and needs nothing
    assert built == []
    stale = {"child"}
    rebuild.rebuild(ctx, dry_run=False)  # FROM root's arm64 image: nothing is bootstrapped
    assert built == ["run"]
    stale = {"root"}
    _arch_test(fake_bin, PASSING)
    rebuild.rebuild(ctx, dry_run=False)
    assert built == ["run", "run"]


def test_setuid_under_emulation_needs_the_c_flag(tmp_path):
    binfmt = _binfmt(tmp_path, "qemu-aarch64")
    assert not doctor.emulation_honours_setuid(ARM64, binfmt)  # flags PF, as Debian registers it
    (binfmt / "qemu-aarch64").write_text("enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POCF\n")
    assert doctor.emulation_honours_setuid(ARM64, binfmt)


@pytest.mark.parametrize(
    ("stderr", "fix"),
    [
        ("Error: crun: setrlimit `RLIMIT_NPROC`: error setting rlimit type 7", "default_ulimits"),
        ("Error: allocating lock for new container: allocation failed; exceeded num_locks (2048)", "renumber"),
    ],
)
def test_a_failed_trial_run_gets_the_fix_for_its_cause(monkeypatch, tmp_path, stderr, fix):
    """The two host faults that stop every `podman run` get their own fix, not 'see the error'."""
    failed = subprocess.CompletedProcess([], 125, "", stderr + "\n")
    monkeypatch.setattr(doctor, "run_quiet", lambda argv, env, **kw: failed)
    check = doctor.check_rlimits(Host(base_env={}), "localhost/gen/runtime:1.0")
    assert (check.status, check.detail) == ("problem", stderr)
    assert fix in check.fix
