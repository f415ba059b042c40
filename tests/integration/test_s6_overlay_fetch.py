"""The s6-overlay provider's builder stage: tarballs fetched from a mirror URL (an HTTP server of
the test's own on 127.0.0.1), each verified against its sha256 before use; a mismatch fails the
build and leaves the previous image where it was. (Real s6-overlay images, built from release
tarballs made here, are verified in test_verify_live.py and test_init_behaviour.py.)"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import SESSION_BASE

pytestmark = pytest.mark.integration

VERSION = "3.9.9.9"  # not in gen's table: the spec's checksums are the only ones
BOOTSTRAP = f"""\
base:
  distro: debian
  release: bookworm
  bootstrap:
    variant: minbase
    include: [{", ".join(SESSION_BASE["include"])}]
    source_date_epoch: {SESSION_BASE["source_date_epoch"]}
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def release_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory, base URL) of a loopback HTTP server serving that directory."""
    directory = tmp_path / "releases"
    directory.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield directory, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def write_tarball(path: Path, member: str, text: str) -> str:
    """A .tar.xz holding one file; returns its sha256."""
    data = text.encode()
    with tarfile.open(path, "w:xz") as tar:
        info = tarfile.TarInfo(member)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spec_text(url: str, sums: dict[str, str]) -> str:
    checksums = "".join(f"    {name}: {digest}\n" for name, digest in sums.items())
    return (
        f'name: overlay\ntags: ["1"]\n{BOOTSTRAP}init:\n  kind: s6-overlay\n  version: "{VERSION}"\n'
        f'  source: {url}\n  checksums:\n{checksums}cmd: ["true"]\n'
    )


def gen(args: list[str], project: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args, "-C", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def image_id(gen_host, env, ref: str) -> str | None:
    got = subprocess.run(
        ["podman", *gen_host.podman_flags(), "image", "inspect", "--format", "{{.Id}}", ref],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return got.stdout.strip() if got.returncode == 0 else None


def test_fetch_stage_verifies_each_tarball_and_refuses_a_mismatch(
    tmp_path, release_server, gen_env, gen_host, bootstrapped_base
):
    directory, url = release_server
    sums = {
        "s6-overlay-noarch.tar.xz": write_tarball(
            directory / "s6-overlay-noarch.tar.xz", "etc/gen-test/noarch", "noarch ok\n"
        ),
        "s6-overlay-x86_64.tar.xz": write_tarball(
            directory / "s6-overlay-x86_64.tar.xz", "etc/gen-test/arch", "x86_64 ok\n"
        ),
    }
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "overlay.yaml").write_text(spec_text(url, sums))
    rendered = gen(["render"], project, gen_env)
    assert rendered.returncode == 0, rendered.stderr
    dockerfile = (project / "output" / "overlay" / "Dockerfile").read_text()
    assert "AS s6-overlay" in dockerfile and "COPY --from=s6-overlay" in dockerfile
    assert url not in json.dumps(sorted(p.name for p in (project / "output").rglob("*")))

    built = gen(["build"], project, gen_env)
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    ref = "localhost/gen/overlay:1"
    read = subprocess.run(
        [
            "podman",
            *gen_host.podman_flags(),
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            ref,
            "/etc/gen-test/noarch",
            "/etc/gen-test/arch",
        ],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.stdout == "noarch ok\nx86_64 ok\n", read.stderr
    good_id = image_id(gen_host, gen_env, ref)

    # Same name, same spec, different bytes on the mirror: the build must refuse them.
    write_tarball(directory / "s6-overlay-noarch.tar.xz", "etc/gen-test/noarch", "tampered\n")
    (project / "specs" / "overlay.yaml").write_text(spec_text(url, sums) + 'env: {REBUILD: "1"}\n')
    assert gen(["render"], project, gen_env).returncode == 0
    refused = gen(["build"], project, gen_env)
    assert refused.returncode != 0
    assert "checksum mismatch for s6-overlay-noarch.tar.xz" in refused.stdout + refused.stderr + _build_log(gen_host)
    assert image_id(gen_host, gen_env, ref) == good_id, "a failed build must leave the tag where it was"


def _build_log(gen_host) -> str:
    log = gen_host.logs_dir / "overlay.log"
    return log.read_text(errors="replace") if log.is_file() else ""


def test_local_directory_source_is_served_to_the_build(tmp_path, gen_env, gen_host, bootstrapped_base):
    releases = tmp_path / "offline"
    releases.mkdir()
    sums = {
        "s6-overlay-noarch.tar.xz": write_tarball(
            releases / "s6-overlay-noarch.tar.xz", "etc/gen-test/noarch", "offline noarch\n"
        ),
        "s6-overlay-x86_64.tar.xz": write_tarball(
            releases / "s6-overlay-x86_64.tar.xz", "etc/gen-test/arch", "offline x86_64\n"
        ),
    }
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "specs" / "overlay.yaml").write_text(
        spec_text(str(releases), sums).replace('tags: ["1"]', 'tags: ["offline"]')
    )
    assert gen(["render"], project, gen_env).returncode == 0
    assert "ARG S6_OVERLAY_BASE_URL\n" in (project / "output" / "overlay" / "Dockerfile").read_text()
    built = gen(["build"], project, gen_env)
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    read = subprocess.run(
        [
            "podman",
            *gen_host.podman_flags(),
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            "localhost/gen/overlay:offline",
            "/etc/gen-test/noarch",
        ],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.stdout == "offline noarch\n", read.stderr
