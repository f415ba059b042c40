"""Several platforms from one spec: build units, per-platform keys and bases, s6-overlay arch names,
gen doctor's emulation checks, verify's per-platform tags, the index's build id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generator.builder import doctor
from generator.builder.bootstrap import import_platform_flags, mmdebstrap_argv
from generator.builder.outputs import content_key, expand_platforms, load_outputs, platform_suffix
from generator.contract import BootstrapBase
from generator.errors import SpecError, UsageError
from generator.platforms import Platform
from generator.publish.index import index_build_id
from generator.verify import _platform_tag
from tests.conftest import CHILD_SPEC, TWO_PLATFORM_ROOT_SPEC, render_specs

AMD64, ARM64 = "linux/amd64", "linux/arm64"
NARROW_SPEC = """\
name: narrow
tags: ["3"]
extends: root
platforms: [linux/arm64]
"""


@pytest.fixture
def outputs(tmp_path):
    return load_outputs(render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC, child=CHILD_SPEC, narrow=NARROW_SPEC))


def test_each_platform_is_a_unit_built_on_its_parents_unit(outputs):
    units = expand_platforms(outputs, AMD64)
    assert set(units) == {"root", "root@arm64", "child", "child@arm64", "narrow"}
    assert units["root"].tags == ("1", "latest") and units["root@arm64"].tags == ("1-arm64", "latest-arm64")
    assert units["child@arm64"].parent == "root@arm64" and units["child"].parent == "root"
    assert {u.repo for n, u in units.items() if n.startswith("child")} == {"child"}
    # A child built only for arm64 keeps its plain tags there, on the parent's arm64 unit.
    assert units["narrow"].platform == ARM64 and units["narrow"].parent == "root@arm64"
    assert units["narrow"].tags == ("3",)


def test_foreign_bootstrap_gets_its_own_rootfs_and_arch(outputs):
    units = expand_platforms(outputs, AMD64)
    native, foreign = units["root"].base, units["root@arm64"].base
    assert isinstance(native, BootstrapBase) and isinstance(foreign, BootstrapBase)
    assert native.platform is None
    assert foreign.image == f"{native.image}-arm64" and foreign.platform == Platform.parse("linux/arm64")
    argv = mmdebstrap_argv(foreign, "http://mirror.invalid/debian", Path("/tmp/x.tar"))
    assert "--architectures=arm64" in argv and "--variant=minbase" in argv
    assert "--architectures=arm64" not in mmdebstrap_argv(native, "http://mirror.invalid/debian", Path("/x"))
    assert import_platform_flags(foreign) == ["--os", "linux", "--arch", "arm64"]
    assert import_platform_flags(native.for_platform("linux/arm/v7"))[-2:] == ["--variant", "v7"]
    assert "--architectures=armhf" in mmdebstrap_argv(
        native.for_platform("linux/arm/v7"), "http://m.invalid", Path("/x")
    )
    # On an arm64 host the arm64 rootfs is the native one.
    arm_native = expand_platforms(outputs, ARM64)["root"].base
    assert isinstance(arm_native, BootstrapBase) and arm_native.platform is None


def test_an_image_without_platforms_is_one_unchanged_unit(tmp_path):
    plain = load_outputs(
        render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC.replace("platforms: [linux/amd64, linux/arm64]\n", ""))
    )
    assert expand_platforms(plain, AMD64) == plain


def test_every_platform_has_its_own_content_key():
    keys = {content_key("f", "p", "b", platform) for platform in ("", AMD64, ARM64)}
    assert len(keys) == 3
    assert content_key("f", "p", "b") == content_key("f", "p", "b", "")


def test_platform_suffixes():
    assert [platform_suffix(p) for p in (AMD64, ARM64, "linux/arm/v7")] == ["amd64", "arm64", "arm-v7"]


S6_OVERLAY_SPEC = (
    """\
name: ov
tags: ["1"]
platforms: [linux/amd64, linux/arm64]
base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}
init:
  kind: s6-overlay
  version: 3.2.0.2
  checksums:
    s6-overlay-noarch.tar.xz: "{a}"
    s6-overlay-x86_64.tar.xz: "{b}"
    s6-overlay-aarch64.tar.xz: "{c}"
""".replace("{a}", "a" * 64)
    .replace("{b}", "b" * 64)
    .replace("{c}", "c" * 64)
)


def test_s6_overlay_gets_each_platforms_tarball_arch(tmp_path):
    manifest = json.loads((render_specs(tmp_path, ov=S6_OVERLAY_SPEC) / "ov" / "gen-manifest.json").read_text())
    assert manifest["platform_build_args"] == {
        AMD64: {"S6_OVERLAY_ARCH": "x86_64"},
        ARM64: {"S6_OVERLAY_ARCH": "aarch64"},
    }
    unit = expand_platforms(load_outputs(tmp_path / "output"), AMD64)["ov@arm64"]
    assert unit.build_args_for(ARM64) == (("S6_OVERLAY_ARCH", "aarch64"),)


def test_a_platform_without_an_s6_overlay_sum_is_a_spec_error(tmp_path):
    spec = S6_OVERLAY_SPEC.replace(f'    s6-overlay-aarch64.tar.xz: "{"c" * 64}"\n', "")
    with pytest.raises(SpecError) as caught:
        render_specs(tmp_path, ov=spec)
    text = str(caught.value)
    assert "s6-overlay-aarch64.tar.xz" in text and "linux/arm64" in text and "ov.yaml:3:" in text


def _binfmt(
    tmp_path: Path, handler: str | None = "enabled\ninterpreter /q\nflags: PF\n", status: str = "enabled\n"
) -> Path:
    directory = tmp_path / "binfmt"
    directory.mkdir()
    (directory / "register").write_text("")
    (directory / "status").write_text(status)
    if handler is not None:
        (directory / "qemu-aarch64").write_text(handler)
    return directory


@pytest.mark.parametrize(
    "handler, status, problem",
    [
        ("enabled\ninterpreter /q\nflags: PF\n", "enabled\n", None),
        (None, "enabled\n", "update-binfmts --enable qemu-aarch64"),
        ("disabled\nflags: PF\n", "enabled\n", "update-binfmts --enable qemu-aarch64"),
        ("enabled\nflags: P\n", "enabled\n", "--reinstall qemu-user-static"),
    ],
)
def test_doctor_checks_emulation_of_foreign_platforms(tmp_path, monkeypatch, handler, status, problem):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    check = doctor.check_emulation(ARM64, _binfmt(tmp_path, handler, status))
    assert check.status == ("problem" if problem else "ok")
    assert problem is None or problem in check.fix


def test_doctor_says_how_to_install_and_mount(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    assert doctor.check_emulation(ARM64, _binfmt(tmp_path)).fix == doctor.QEMU_INSTALL
    monkeypatch.setattr(doctor.shutil, "which", lambda name: f"/usr/bin/{name}")
    unmounted = doctor.check_emulation(ARM64, tmp_path / "nothing")
    assert unmounted.problem and unmounted.fix.startswith("mount -t binfmt_misc")


def test_doctor_lists_the_rendered_foreign_platforms(tmp_path, monkeypatch):
    render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC)
    monkeypatch.setattr(doctor, "host_platform", lambda: AMD64)
    assert doctor.rendered_foreign_platforms(tmp_path / "output") == {ARM64: True}
    assert doctor.rendered_foreign_platforms(tmp_path / "missing") == {}


def test_verify_names_each_platforms_image(tmp_path, monkeypatch):
    render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC)
    monkeypatch.setattr("generator.builder.host.host_platform", lambda: AMD64)
    assert _platform_tag(tmp_path, "root", "1", "") == "1"
    assert _platform_tag(tmp_path, "root", "1", AMD64) == "1"
    assert _platform_tag(tmp_path, "root", "1", ARM64) == "1-arm64"
    with pytest.raises(UsageError, match="not built for linux/s390x"):
        _platform_tag(tmp_path, "root", "1", "linux/s390x")


def test_index_build_id_follows_its_platforms_in_order():
    assert index_build_id(["gen-a", "gen-b"]) == index_build_id(["gen-a", "gen-b"])
    assert index_build_id(["gen-a", "gen-b"]) != index_build_id(["gen-b", "gen-a"])
    assert index_build_id(["gen-a"]).startswith("gen-") and len(index_build_id(["gen-a"])) == 20


def test_verify_runs_a_foreign_image_as_its_platform(monkeypatch):
    from generator.verify import foreign_platform

    monkeypatch.setattr("generator.builder.host.host_platform", lambda: AMD64)
    assert foreign_platform({"Os": "linux", "Architecture": "arm64"}) == ARM64
    assert foreign_platform({"Os": "linux", "Architecture": "arm", "Variant": "v7"}) == "linux/arm/v7"
    assert foreign_platform({"Os": "linux", "Architecture": "amd64"}) == ""
    assert foreign_platform({}) == ""


def test_a_foreign_platform_needs_a_bootstrapped_base(tmp_path, monkeypatch):
    from generator.builder import engine
    from generator.builder.host import Host
    from generator.errors import GenError

    monkeypatch.setattr(engine, "host_platform", lambda: AMD64)
    local = TWO_PLATFORM_ROOT_SPEC.replace("bootstrap: {variant: minbase}", "local: localhost/test/base:1")
    output = render_specs(tmp_path, root=local)
    builder = engine.Builder(Host.from_env(tmp_path / "storage"), output, tmp_path, engine.BuildOptions())
    assert set(builder.images) == {"root", "root@arm64"}
    with pytest.raises(GenError, match="linux/arm64 needs a bootstrapped base"):
        builder._ensure_base(builder.images["root@arm64"])


def test_a_build_can_be_narrowed_to_one_platform(tmp_path, monkeypatch):
    from generator.builder import engine
    from generator.builder.host import Host

    monkeypatch.setattr(engine, "host_platform", lambda: AMD64)
    output = render_specs(tmp_path, root=TWO_PLATFORM_ROOT_SPEC, child=CHILD_SPEC, narrow=NARROW_SPEC)

    def closure(names, platforms=()):
        options = engine.BuildOptions(platforms=platforms)
        return engine.Builder(Host.from_env(tmp_path / "storage"), output, tmp_path, options).closure(names)

    assert closure(["child"]) == ["root", "child", "root@arm64", "child@arm64"]
    assert closure(["child"], (ARM64,)) == ["root@arm64", "child@arm64"]
    assert closure([], (AMD64,)) == ["root", "child"]
    assert closure(["narrow"], (ARM64,)) == ["root@arm64", "narrow"]
    with pytest.raises(UsageError, match="narrow is not built for linux/amd64"):
        closure(["narrow"], (AMD64,))
    with pytest.raises(UsageError, match="unknown image nope"):
        closure(["nope"])


def test_package_check_reads_every_platforms_image_with_its_own_lists(outputs, tmp_path, monkeypatch):
    from generator.builder.host import Host
    from generator.rebuild import scheduled as rebuild
    from generator.rebuild.updates import Update

    calls = []

    def updates(host, ref, source, cache, platform=None):
        calls.append((ref, cache.name, platform))
        found = [Update("libc6", "1", "2", "Debian-Security:12/stable-security")]
        return found + ([Update("zlib1g", "1", "3", "Debian:12")] if platform == ARM64 else [])

    monkeypatch.setattr(rebuild, "host_platform", lambda: AMD64)
    monkeypatch.setattr(rebuild, "available_updates", updates)
    monkeypatch.setattr(rebuild.storage, "exists", lambda host, ref: True)
    ctx = rebuild.RebuildContext(Host(), tmp_path, outputs, "localhost/gen", None)
    verdict = rebuild.Verdict("child")
    rebuild._check_packages(ctx, outputs["child"], ("http://mirror", "bookworm", "main"), tmp_path / "lists", verdict)
    assert calls == [("localhost/gen/child:2", "amd64", AMD64), ("localhost/gen/child:2-arm64", "arm64", ARM64)]
    assert [(u["package"], u["platforms"]) for u in verdict.updates] == [("libc6", [AMD64, ARM64]), ("zlib1g", [ARM64])]
    assert verdict.codes == {"packages"} and "zlib1g 1 -> 3 (linux/arm64)" in verdict.reasons[0]["detail"]

    # A foreign platform's image not in storage is not checked; the host's still is.
    monkeypatch.setattr(rebuild.storage, "exists", lambda host, ref: not ref.endswith("-arm64"))
    calls.clear()
    verdict = rebuild.Verdict("child")
    rebuild._check_packages(ctx, outputs["child"], ("http://mirror", "bookworm", "main"), tmp_path / "lists", verdict)
    assert [c[0] for c in calls] == ["localhost/gen/child:2"] and verdict.stale


@pytest.mark.parametrize(
    "text, debian, s6_overlay, qemu, suffix",
    [
        ("linux/amd64", "amd64", "x86_64", "x86_64", "amd64"),
        ("linux/arm64", "arm64", "aarch64", "aarch64", "arm64"),
        ("linux/arm/v7", "armhf", "armhf", "arm", "arm-v7"),
        ("linux/arm/v6", "armel", "arm", "arm", "arm-v6"),
        ("linux/386", "i386", "i686", "i386", "386"),
        ("linux/ppc64le", "ppc64el", "powerpc64le", "ppc64le", "ppc64le"),
        ("linux/mips64le", "mips64le", None, None, "mips64le"),  # known to none of the tables: its own name
    ],
)
def test_one_platform_type_names_the_architecture_for_each_tool(text, debian, s6_overlay, qemu, suffix):
    from generator.platforms import Platform

    platform = Platform.parse(text)
    assert (platform.debian_arch, platform.s6_overlay_arch, platform.qemu_name, platform.suffix) == (
        debian,
        s6_overlay,
        qemu,
        suffix,
    )
    assert str(platform) == text


@pytest.mark.parametrize(
    "machine, platform",
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64"),
        ("armv7l", "linux/arm/v7"),
        ("i686", "linux/386"),
        ("loongarch64", "linux/loongarch64"),
    ],
)
def test_the_host_platform_from_uname_machine(machine, platform):
    from generator.platforms import Platform

    assert str(Platform.of_machine(machine)) == platform


def test_a_fresh_bootstrap_runs_mmdebstrap_again_though_the_rootfs_is_stored(outputs, tmp_path, monkeypatch):
    from generator.builder import bootstrap
    from generator.builder.host import Host
    from generator.builder.proc import Cancel
    from generator.builder.storage import StoredImage

    stored = StoredImage("a" * 64, "", ("rootfs",), 0, 1, {}, "")
    ran: list[str] = []

    def fake_run(argv, env, log, cancel, on_line=None, cwd=None):
        ran.append(argv[0])
        if argv[0] == "mmdebstrap":
            Path(argv[-2]).write_bytes(b"tar")
        return 0, []

    monkeypatch.setattr(bootstrap, "inspect", lambda host, ref: stored)
    monkeypatch.setattr(bootstrap, "run_logged", fake_run)
    monkeypatch.setattr(bootstrap, "resolve_mirror", lambda *args: "http://mirror.invalid/debian")
    host = Host.from_env(tmp_path / "storage")
    root = outputs["root"]
    assert bootstrap.bootstrap_base(host, root, Cancel(), lambda event: None) is stored and ran == []
    assert bootstrap.bootstrap_base(host, root, Cancel(), lambda event: None, fresh=True) is stored
    assert ran == ["mmdebstrap", "podman"]  # bootstrapped and imported under the same tag
