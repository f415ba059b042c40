"""s6-overlay on arm64 under qemu user emulation (issue 19): the overlay spec (runtime's twin on
real s6-overlay 3.2.3.2, tests/integration/conftest.py) built for linux/arm64 from release
tarballs made here by `build-release OUT aarch64` with the cross compiler, then `gen verify
--platform linux/arm64` as on amd64 (test_verify_live.py).

The arm64 image's fetch stage (templates/stages/s6-overlay-fetch.j2) takes every noarch file the
spec has a sum for plus s6-overlay-aarch64.tar.xz only, so the aarch64 build alone (it also writes
the noarch and symlinks tarballs) is all this image needs; amd64's overlay image is the session's.

    build-release OUT aarch64 -> render -> build (arm64 rootfs, gen-log under qemu)
    -> uname -> verify --platform linux/arm64 --json
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from generator.builder.doctor import check_emulation
from generator.builder.host import Host, host_platform
from tests.integration.conftest import OVERLAY_BUILD_TIMEOUT, overlay_sources, overlay_spec

pytestmark = pytest.mark.integration

PREFIX = "localhost/gen-overlay-arm64"
PLATFORM = "linux/arm64"
ARCH = "aarch64"
# The cross toolchain build-release needs for aarch64 (Debian: gcc-aarch64-linux-gnu and
# libc6-dev-arm64-cross, .ci/install-deps installs both): the compiler and the static libc.
CROSS_GCC = "aarch64-linux-gnu-gcc"
CROSS_LIBC = Path("/usr/aarch64-linux-gnu/lib/libc.a")
CROSS_PACKAGES = "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
# The arm64 bootstrap (2-3 min under qemu unless the session already has it) and gen-log
# compiled under qemu (about 3.5 min) come first.
BUILD_TIMEOUT = 2400
VERIFY_TIMEOUT = 1200
# What the overlay spec does not declare: these checks have nothing to check. Every other check
# must pass, as on amd64.
UNDECLARED = {"profiles", "readiness and health", "log forwarding"}


@pytest.fixture(scope="module")
def arm64_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of s6-overlay release tarballs for aarch64 (with noarch and .sha256 files),
    built by s6-overlay's own Makefile with the cross compiler."""
    sources = overlay_sources()
    if sources is None:
        pytest.skip(
            "s6-overlay's pinned sources (../shared/vendor/s6-overlay-src, or GEN_S6_OVERLAY_SRC) are not on "
            "this machine: no arm64 s6-overlay image to test"
        )
    if host_platform() != "linux/amd64":
        pytest.skip("written for an amd64 build host (arm64 emulated)")
    if shutil.which(CROSS_GCC) is None or not CROSS_LIBC.is_file():
        pytest.fail(
            f"build-release {ARCH} needs {CROSS_GCC} and {CROSS_LIBC}: apt-get install {CROSS_PACKAGES} "
            "(.ci/install-deps does)"
        )
    emulation = check_emulation(PLATFORM)
    if emulation.problem:
        pytest.fail(f"arm64 emulation: {emulation.detail}; fix: {emulation.fix} (.ci/install-deps does it)")
    out = tmp_path_factory.mktemp("s6-overlay-release-arm64")
    start = time.monotonic()
    built = subprocess.run(
        [str(sources / "build-release"), str(out), ARCH],
        capture_output=True,
        text=True,
        timeout=OVERLAY_BUILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert built.returncode == 0, f"build-release {ARCH} failed: {built.stderr[-3000:]}"
    print(f"build-release {ARCH}: {time.monotonic() - start:.0f} s")
    assert (out / f"s6-overlay-{ARCH}.tar.xz.sha256").is_file(), sorted(p.name for p in out.iterdir())
    return out


@pytest.fixture(scope="module")
def arm64_overlay(tmp_path_factory, arm64_release: Path, gen_env, gen_cli) -> tuple[Path, dict]:
    """The overlay spec for linux/arm64 only, rendered and built: (project, the build's unit)."""
    project = tmp_path_factory.mktemp("overlay-arm64")
    (project / "specs").mkdir()
    spec = overlay_spec(arm64_release).replace("\ninit:\n", f"\nplatforms: [{PLATFORM}]\ninit:\n", 1)
    assert f"platforms: [{PLATFORM}]" in spec
    (project / "specs" / "overlay.yaml").write_text(spec)
    rendered = gen_cli(["render", "-C", str(project)], gen_env)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    start = time.monotonic()
    built = gen_cli(
        ["build", "-C", str(project), "--prefix", PREFIX, "--format", "json"], gen_env, timeout=BUILD_TIMEOUT
    )
    print(f"gen build (arm64 overlay): {time.monotonic() - start:.0f} s")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-4000:]
    units = json.loads(built.stdout)["images"]
    assert len(units) == 1 and units[0]["action"] == "built", units
    return project, units[0]


def _ref(unit: dict) -> str:
    """The image's first tag, as `gen verify overlay --platform linux/arm64` resolves it."""
    ref = unit["tags"][0]
    assert ref.startswith(f"{PREFIX}/overlay:"), unit
    return ref


def _podman(host: Host, env, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *host.podman_flags(), "run", "--rm", "--platform", PLATFORM, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_the_image_is_arm64(arm64_overlay, gen_host, gen_env) -> None:
    _, unit = arm64_overlay
    bare = _podman(gen_host, gen_env, "--entrypoint", "uname", _ref(unit), "-m")
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.strip() == ARCH
    # Through s6-overlay's /init as the image's user; under qemu (no setuid) it needs /run as
    # the user's own, as the README says.
    init = _podman(gen_host, gen_env, "--tmpfs", "/run:U", _ref(unit), "uname", "-m")
    assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-2000:]
    assert init.stdout.strip() == ARCH, init.stdout


def test_verify_passes_on_arm64(arm64_overlay, gen_env, gen_cli) -> None:
    project, unit = arm64_overlay
    start = time.monotonic()
    verified = gen_cli(
        ["verify", "overlay", "-C", str(project), "--prefix", PREFIX, "--platform", PLATFORM, "--json"],
        dict(gen_env, COLUMNS="200"),
        timeout=VERIFY_TIMEOUT,
    )
    print(f"gen verify --platform {PLATFORM}: {time.monotonic() - start:.0f} s")
    assert verified.returncode in (0, 1), verified.stdout[-2000:] + verified.stderr[-3000:]
    report = json.loads(verified.stdout)
    assert report["image"] == _ref(unit)
    checks = {c["name"]: c for c in report["checks"]}
    failures = {n: c["detail"] for n, c in checks.items() if c["status"] == "fail"}
    assert not failures, failures
    skips = {n: c["detail"] for n, c in checks.items() if c["status"] == "skip"}
    assert set(skips) == UNDECLARED, skips
    assert verified.returncode == 0 and report["ok"]
