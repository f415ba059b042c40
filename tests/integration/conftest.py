"""Session fixtures of the podman integration tests: the bundled example specs rendered into a
temporary copy of the project and built once into the session's storage, plus three specs of the
tests' own: `no-init` (the shell-is-PID-1 baseline), `app-strict` (app-base with sysctl
policy `fail`, PID 1 started as root) and `ready` (runtime with readiness and start-up order).
Every test shares those images; containers run with --rm or are removed.
`local_registry` is Debian's docker-registry on a free loopback port for the session. Where
s6-overlay's pinned sources are on the machine, `overlay` (runtime on real s6-overlay) is built
too, and `init_image` gives each init-behaviour test both providers.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from generator.builder.host import Host, gen_containers_conf
from generator.verify.podman import Podman
from tests.conftest import copy_bundled_specs

BUILD_TIMEOUT = 1800

# The baseline: built by gen without an init layer, a shell form CMD as PID 1.
NO_INIT_SPEC = """\
name: no-init
tags: ["1.0"]
description: baseline without an init layer; a shell is PID 1
base:
  distro: debian
  release: bookworm
  bootstrap:
    variant: minbase
    include: [execline, s6]  # the session's shared rootfs; nothing of it is used
    source_date_epoch: 1700000000
init:
  kind: none
cmd: ["sh", "-c", "sleep 60"]
"""

# app-base's sysctls with the other failure policy: the runtime must set them.
APP_STRICT_SPEC = """\
name: app-strict
tags: ["1.0"]
description: app-base whose sysctls must be set by the runtime, started as root
extends: app-base
init:
  start_as_root: true
sysctls:
  policy: fail
"""

# runtime with a service that becomes ready late and CMD after it: readiness, start-up order and
# the HEALTHCHECK generated from them (a docker-format image, the only one that keeps it); two
# profiles, prd by default; and log forwarding (to a collector nobody runs: verify uses its own).
READY_SPEC = """\
name: ready
tags: ["1.0"]
description: runtime with a slow service that CMD waits for
extends: runtime
services:
  - name: db
    command: [sh, -c, "sleep 3; touch /tmp/db-ready; exec sleep infinity"]
    ready: {check: [test, -e, /tmp/db-ready], interval: 200ms, timeout: 10s}
after: [db]
ready: {check: [test, -e, /tmp/db-ready], timeout: 10s}
cmd: [sh, -c, "test -e /tmp/db-ready && echo started after db; exec sleep infinity"]
profiles:
  dev: {env: {APP_MODE: development}, rootfs: [profile-dev]}
  prd: {env: {APP_MODE: production}}
default_profile: prd
logging:
  forward: {to: "udp://127.0.0.1:514", facility: local1}
"""
# The dev profile's overlay, where the image's non-root user may write.
PROFILE_FILE = ("profile-dev/tmp/app/mode.conf", "verbose = yes\n")
# The same on s6-overlay, where the services are s6-rc longruns.
READY_OVERLAY_SPEC = READY_SPEC.replace("name: ready", "name: overlay-ready").replace(
    "extends: runtime", "extends: overlay"
)


# The session's shared rootfs (tests/conftest.py bootstraps it once), as a spec's base.
SESSION_BOOTSTRAP = """\
base:
  distro: debian
  release: bookworm
  bootstrap:
    variant: minbase
    include: [execline, s6]
    source_date_epoch: 1700000000
"""

# A real syslog daemon, Debian's rsyslog, for the log forwarding tests: it listens on tcp and udp
# 10514 on its loopback (the app's, whose network it joins) and on /collect/log.sock, and writes
# what it receives to /collect/received (the test mounts /collect), one message a line.
COLLECTOR_SPEC = (
    """\
name: collector
tags: ["1.0"]
description: rsyslog receiving the forwarding tests' messages
"""
    + SESSION_BOOTSTRAP
    + """\
init:
  kind: none
packages: [rsyslog]
rootfs: [collector-files]
cmd: [rsyslogd, -n, -f, /etc/gen-test/rsyslog.conf, -i, /tmp/rsyslogd.pid]
"""
)
COLLECTOR_CONF = (
    "collector-files/etc/gen-test/rsyslog.conf",
    """\
global(workDirectory="/tmp")
module(load="imtcp")
module(load="imudp")
module(load="imuxsock" SysSock.Use="off")
input(type="imtcp" address="127.0.0.1" port="10514")
input(type="imudp" address="127.0.0.1" port="10514")
input(type="imuxsock" Socket="/collect/log.sock" UseSpecialParser="off" ParseHostname="on")
template(name="line" type="string" string="%app-name% %syslogfacility-text% %timereported:::date-rfc3339% %msg%\\n")
*.* action(type="omfile" file="/collect/received" template="line" fileCreateMode="0644")
""",
)
COLLECTOR_PORT = 10514


# runtime's counterpart on the other init provider (with app-base's volume and sysctls, and a
# service): real s6-overlay, built from the pinned sources beside the project
# (../shared/vendor/s6-overlay-src) into release tarballs once per session.
OVERLAY_SPEC = (
    """\
name: overlay
tags: ["1.0"]
description: runtime on s6-overlay instead of the distro's s6, with a service, a volume and sysctls
"""
    + SESSION_BOOTSTRAP
    + """\
init:
  kind: s6-overlay
  version: "{version}"
  source: {source}
  checksums:
{checksums}
logging:
  dir: /lain/logs/default
  stdout: true
packages: [ca-certificates, procps]
services:
  - {{name: heartbeat, command: [sh, -c, "echo beat-start; while :; do echo beat; sleep 0.2; done"]}}
users:
  - {{name: nonroot, uid: 65532}}
user: nonroot
volumes:
  - {{path: /data, owner: nonroot, mode: "0750"}}
sysctls:
  values: {{kernel.shmmax: 68719476736, kernel.msgmax: 65536}}
  policy: warn
env:
  LANG: C.UTF-8
"""
)
OVERLAY_VERSION = "3.2.3.2"
OVERLAY_SOURCES = "shared/vendor/s6-overlay-src"
OVERLAY_BUILD_TIMEOUT = 900


def overlay_sources() -> Path | None:
    """build-release's directory: GEN_S6_OVERLAY_SRC, or shared/vendor/s6-overlay-src beside the
    project, a level or two up, or beside the repository this one was cloned from (a fresh clone
    for CI may live anywhere)."""
    if os.environ.get("GEN_S6_OVERLAY_SRC"):
        return Path(os.environ["GEN_S6_OVERLAY_SRC"])
    repo = Path(__file__).resolve().parents[2]
    places = list(repo.parents)[:3]
    origin = subprocess.run(
        ["git", "-C", str(repo), "config", "--get", "remote.origin.url"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    if origin.startswith("/") or origin.startswith("file://"):
        places.append(Path(origin.removeprefix("file://")).resolve().parent)
    return next((p / OVERLAY_SOURCES for p in places if (p / OVERLAY_SOURCES / "build-release").is_file()), None)


@pytest.fixture(scope="session")
def s6_overlay_release(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A directory of real s6-overlay release tarballs (x86_64, with .sha256 files), built once per
    session by s6-overlay's own Makefile; None where the pinned sources are not on this machine."""
    sources = overlay_sources()
    if sources is None or platform.machine() != "x86_64":
        return None
    out = tmp_path_factory.mktemp("s6-overlay-release")
    built = subprocess.run(
        [str(sources / "build-release"), str(out), "x86_64"],
        capture_output=True,
        text=True,
        timeout=OVERLAY_BUILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert built.returncode == 0, f"build-release failed: {built.stderr[-3000:]}"
    return out


def overlay_spec(release: Path) -> str:
    """The overlay spec for release tarballs in `release`, sums from their .sha256 files."""
    sums = {p.name.removesuffix(".sha256"): p.read_text().split()[0] for p in release.glob("s6-overlay-*.sha256")}
    checksums = "\n".join(f"    {name}: {digest}" for name, digest in sorted(sums.items()))
    return OVERLAY_SPEC.format(version=OVERLAY_VERSION, source=release, checksums=checksums)


def run_gen(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`gen ARGS` as a user runs it, in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def gen_cli():
    """gen_cli(args, env, timeout=300): `gen ARGS` in a subprocess."""
    return run_gen


@pytest.fixture(scope="session")
def example_project(
    tmp_path_factory: pytest.TempPathFactory,
    gen_env: dict[str, str],
    bootstrapped_base: str,
    s6_overlay_release: Path | None,
) -> Path:
    """A copy of the project's specs plus the tests' own, rendered and built (all images)."""
    project = tmp_path_factory.mktemp("examples")
    copy_bundled_specs(project / "specs")
    (project / "specs" / "no-init.yaml").write_text(NO_INIT_SPEC)
    (project / "specs" / "app-strict.yaml").write_text(APP_STRICT_SPEC)
    (project / "specs" / "ready.yaml").write_text(READY_SPEC)
    (project / "specs" / "collector.yaml").write_text(COLLECTOR_SPEC)
    for rel, text in (PROFILE_FILE, COLLECTOR_CONF):
        (project / "specs" / rel).parent.mkdir(parents=True)
        (project / "specs" / rel).write_text(text)
    if s6_overlay_release is not None:
        (project / "specs" / "overlay.yaml").write_text(overlay_spec(s6_overlay_release))
        (project / "specs" / "overlay-ready.yaml").write_text(READY_OVERLAY_SPEC)
    rendered = run_gen(["render", "-C", str(project)], gen_env)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    bases = {
        json.loads(p.read_text())["base"].get("image")
        for p in (project / "output").glob("*/gen-manifest.json")
        if json.loads(p.read_text())["base"].get("kind") == "bootstrap"
    }
    if bases != {bootstrapped_base}:
        # Not an error: `gen build` bootstraps what render asks for; it only costs one more rootfs.
        warnings.warn(
            f"the examples' bootstrap {sorted(bases)} is not the session base {bootstrapped_base} "
            "(tests/conftest.py SESSION_BASE): the build bootstraps it again",
            stacklevel=1,
        )
    # Siblings (the children of runtime, the two s6-overlay images) build side by side on 2 cores.
    built = run_gen(["build", "-C", str(project), "--jobs", "2"], gen_env, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, built.stdout + built.stderr[-4000:]
    return project


@pytest.fixture(scope="session")
def example_images(example_project: Path) -> dict[str, str]:
    """Image reference of every built example by spec name: <prefix>/<name>:<first tag>."""
    refs = {}
    for manifest in sorted((example_project / "output").glob("*/gen-manifest.json")):
        data = json.loads(manifest.read_text())
        refs[data["name"]] = f"localhost/gen/{data['name']}:{data['tags'][0]}"
    return refs


OVERLAY_ABSENT = (
    "s6-overlay's pinned sources (../shared/vendor/s6-overlay-src, or GEN_S6_OVERLAY_SRC) are not "
    "on this machine (or it is not x86_64): no s6-overlay image to test"
)


@pytest.fixture(scope="session", params=["s6", "s6-overlay"])
def init_image(request: pytest.FixtureRequest, example_images: dict[str, str]) -> str:
    """runtime on each init provider: gen's own init on the distro's s6, and real s6-overlay."""
    if request.param == "s6":
        return example_images["runtime"]
    if "overlay" not in example_images:
        pytest.skip(OVERLAY_ABSENT)
    return example_images["overlay"]


@pytest.fixture(scope="session")
def podman(gen_host: Host) -> Podman:
    """podman on the session storage, through the verify stage's bounded calls."""
    return Podman(gen_host)


@pytest.fixture(scope="session")
def hint_flags(example_project: Path, gen_env: dict[str, str]):
    """hint_flags(name): the `--sysctl` flags `gen hints NAME --json` prints."""
    cache: dict[str, list[str]] = {}

    def flags(name: str) -> list[str]:
        if name not in cache:
            got = run_gen(["hints", name, "-C", str(example_project), "--json"], gen_env)
            assert got.returncode == 0, got.stderr
            cache[name] = [f for f in json.loads(got.stdout)["run_flags"] if f.startswith("--sysctl")]
        return cache[name]

    return flags


@pytest.fixture(scope="session")
def gen_verify(example_project: Path, gen_env: dict[str, str]):
    """gen_verify(target, *args) -> CompletedProcess of `gen verify`, run once per argument list."""
    cache: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = {}

    def verify(target: str, *args: str) -> subprocess.CompletedProcess[str]:
        key = (target, *args)
        if key not in cache:
            env = dict(gen_env, COLUMNS="200")
            cache[key] = run_gen(["verify", target, "-C", str(example_project), *args], env, timeout=600)
        return cache[key]

    return verify


REGISTRY_BINARY = "/usr/bin/docker-registry"
REGISTRY_STARTUP_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory):
    """HOST:PORT of a docker-registry serving plain HTTP on loopback for this session."""
    if not Path(REGISTRY_BINARY).is_file():
        pytest.skip(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
    work = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (work / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (work / "registry.log").open("w")
    proc = subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(work / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + REGISTRY_STARTUP_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"docker-registry did not start: {(work / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    log.close()


REHEARSAL_TEST = "test_the_readme_commands_work_on_a_fresh_machine"


@pytest.fixture(scope="session", autouse=True)
def _rehearsal_beside_the_suite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Start the fresh-machine rehearsal (25 minutes, in a container of its own) with the first
    integration test when its test is selected and can run, so the rest of the suite runs beside
    it; its test is ordered last (tests/conftest.py) and waits for it."""
    from tests.conftest import missing_build_tools
    from tests.integration.test_fresh_machine import start_rehearsal

    wanted = any(item.name == REHEARSAL_TEST for item in request.session.items)
    if not wanted or os.geteuid() != 0 or missing_build_tools():
        yield None
        return
    env = dict(os.environ, CONTAINERS_CONF=str(gen_containers_conf()))
    rehearsal = start_rehearsal(tmp_path_factory.mktemp("rehearsal"), env)
    yield rehearsal
    rehearsal.stop()


@pytest.fixture(scope="session")
def rehearsal(_rehearsal_beside_the_suite):
    if _rehearsal_beside_the_suite is None:
        pytest.skip("the rehearsal was not started (not root, or build tools missing)")
    return _rehearsal_beside_the_suite
