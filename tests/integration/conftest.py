"""Session fixtures of the podman integration tests: the bundled example specs rendered into a
temporary copy of the project and built once into the session's storage, plus two specs of the
tests' own: `no-init` (the shell-is-PID-1 baseline) and `app-strict` (app-base with sysctl
policy `fail`, PID 1 started as root). Every test shares those images; containers run with --rm or are removed.
`local_registry` is Debian's docker-registry on a free loopback port for the session.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from generator.build.host import Host
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


def run_gen(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`gen ARGS` as a user runs it, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "generator", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def gen_cli():
    """gen_cli(args, env, timeout=300): `gen ARGS` in a subprocess."""
    return run_gen


@pytest.fixture(scope="session")
def example_project(tmp_path_factory: pytest.TempPathFactory, gen_env: dict[str, str],
                    bootstrapped_base: str) -> Path:
    """A copy of the project's specs plus the tests' own, rendered and built (all images)."""
    project = tmp_path_factory.mktemp("examples")
    copy_bundled_specs(project / "specs")
    (project / "specs" / "no-init.yaml").write_text(NO_INIT_SPEC)
    (project / "specs" / "app-strict.yaml").write_text(APP_STRICT_SPEC)
    rendered = run_gen(["render", "-C", str(project)], gen_env)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    bases = {json.loads(p.read_text())["base"].get("image") for p in (project / "output").glob("*/gen-manifest.json")
             if json.loads(p.read_text())["base"].get("kind") == "bootstrap"}
    if bases != {bootstrapped_base}:
        # Not an error: `gen build` bootstraps what render asks for; it only costs one more rootfs.
        warnings.warn(f"the examples' bootstrap {sorted(bases)} is not the session base {bootstrapped_base} "
                      "(tests/conftest.py SESSION_BASE): the build bootstraps it again", stacklevel=1)
    built = run_gen(["build", "-C", str(project)], gen_env, timeout=BUILD_TIMEOUT)
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
        f"http:\n  addr: 127.0.0.1:{port}\n")
    log = (work / "registry.log").open("w")
    proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(work / "config.yml")], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
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
