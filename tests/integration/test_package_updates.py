"""`gen rebuild`'s package check end to end: a real apt repository served on loopback publishes a
newer version of a package one image installed, and the scheduled job rebuilds that image alone.

The repository is added the way a user adds a vendor's: an overlay of one spec drops a
sources.list.d entry, and a child spec installs the package from it. Its index is written here
(Packages and Release, unsigned, `trusted=yes`) around .deb files dpkg-deb builds.

    build -> lock -> rebuild (nothing) -> 1.1 published -> dry run (probe: packages) -> rebuild
    (probe alone, gen-probe 1.0 -> 1.1 in image, lock and report) -> rebuild (nothing)
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import copy_bundled_specs

pytestmark = pytest.mark.integration

PREFIX = "localhost/gen-pkgtest"
PACKAGE = "gen-probe"
SUITE = "bookworm"
# Release dates only grow, as a real archive's do (apt refuses nothing here, but keeps it honest).
RELEASE_DATES = {"1.0": "Thu, 01 Jan 2026 00:00:00 UTC", "1.1": "Fri, 02 Jan 2026 00:00:00 UTC"}

PROBE_SOURCE_SPEC = """\
name: probe-source
tags: ["1"]
extends: debian-s6
rootfs:
  - overlays/probe-source
"""
PROBE_SPEC = f"""\
name: probe
tags: ["1"]
extends: probe-source
packages: [{PACKAGE}]
"""


def _host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def _build_deb(work: Path, version: str) -> Path:
    tree = work / f"{PACKAGE}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/share" / PACKAGE).mkdir(parents=True)
    (tree / "usr/share" / PACKAGE / "version").write_text(version + "\n")
    (tree / "DEBIAN/control").write_text(
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\nMaintainer: gen tests <tests@localhost>\n"
        f"Description: marker package of gen's package-update test\n"
    )
    deb = work / f"{PACKAGE}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
        timeout=60,
        env=dict(os.environ, SOURCE_DATE_EPOCH="1700000000"),
    )
    return deb


class AptRepository:
    """A one-package apt archive under `root`: pool/ plus dists/SUITE/{Release,main/binary-ARCH/}."""

    def __init__(self, root: Path, arch: str):
        self.root, self.arch = root, arch

    def publish(self, deb: Path, version: str) -> None:
        pool = self.root / "pool/main"
        pool.mkdir(parents=True, exist_ok=True)
        shutil.copy2(deb, pool / deb.name)
        data = deb.read_bytes()
        packages = (
            f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n"
            f"Maintainer: gen tests <tests@localhost>\nFilename: pool/main/{deb.name}\nSize: {len(data)}\n"
            f"SHA256: {hashlib.sha256(data).hexdigest()}\nDescription: marker package of gen's package-update test\n"
        ).encode()
        index_dir = self.root / "dists" / SUITE / "main" / f"binary-{self.arch}"
        index_dir.mkdir(parents=True, exist_ok=True)
        files = {
            f"main/binary-{self.arch}/Packages": packages,
            f"main/binary-{self.arch}/Packages.gz": gzip.compress(packages, mtime=0),
        }
        for relative, content in files.items():
            (self.root / "dists" / SUITE / relative).write_bytes(content)
        sums = "".join(f" {hashlib.sha256(c).hexdigest()} {len(c)} {r}\n" for r, c in files.items())
        (self.root / "dists" / SUITE / "Release").write_text(
            f"Origin: gen-tests\nLabel: gen-tests\nSuite: {SUITE}\nCodename: {SUITE}\n"
            f"Date: {RELEASE_DATES[version]}\nArchitectures: {self.arch}\nComponents: main\nSHA256:\n{sums}"
        )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def send_header(self, keyword: str, value: str) -> None:
        # Indexes change within one second here; without Last-Modified apt never gets a 304 for them.
        if keyword != "Last-Modified":
            super().send_header(keyword, value)


@pytest.fixture(scope="module")
def apt_repository(tmp_path_factory: pytest.TempPathFactory):
    """(repository, URL) of an apt archive served over HTTP on 127.0.0.1 for this module."""
    root = tmp_path_factory.mktemp("apt-repository")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield AptRepository(root, _host_arch()), f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _gen(gen_cli, env, project: Path, *args: str, timeout: float = 900):
    return gen_cli([*args, "-C", str(project), "--prefix", PREFIX], env, timeout=timeout)


def _rebuild(gen_cli, env, project: Path, *extra: str) -> tuple[int, dict]:
    # Verify (the init layer's runtime checks) is another stage's test; the decision is under test.
    got = _gen(gen_cli, env, project, "rebuild", "--skip-verify", "--json", *extra)
    assert got.returncode in (0, 3), got.stdout[-3000:] + got.stderr[-3000:]
    return got.returncode, json.loads(got.stdout)


def _installed_version(gen_host, gen_env) -> str:
    proc = subprocess.run(
        [
            "podman",
            *gen_host.podman_flags(),
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            f"{PREFIX}/probe:1",
            f"/usr/share/{PACKAGE}/version",
        ],
        env=gen_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_newer_package_in_a_repository_rebuilds_the_image_that_installed_it(
    apt_repository, tmp_path_factory, tmp_path, gen_env, gen_host, bootstrapped_base, gen_cli
):
    repository, url = apt_repository
    repository.publish(_build_deb(tmp_path, "1.0"), "1.0")
    project = tmp_path_factory.mktemp("package-update-project")
    copy_bundled_specs(project / "specs", "debian-s6")
    (project / "specs" / "probe-source.yaml").write_text(PROBE_SOURCE_SPEC)
    (project / "specs" / "probe.yaml").write_text(PROBE_SPEC)
    sources = project / "specs/overlays/probe-source/etc/apt/sources.list.d/gen-probe.list"
    sources.parent.mkdir(parents=True)
    sources.write_text(f"deb [trusted=yes] {url} {SUITE} main\n")
    rendered = gen_cli(["render", "-C", str(project)], gen_env)
    assert rendered.returncode == 0, rendered.stderr
    built = _gen(gen_cli, gen_env, project, "build", timeout=1800)
    assert built.returncode == 0, built.stdout + built.stderr[-3000:]
    assert _installed_version(gen_host, gen_env) == "1.0"
    locked = _gen(gen_cli, gen_env, project, "lock", "--update")
    assert locked.returncode == 0, locked.stderr
    assert json.loads((project / "gen.lock").read_text())["images"]["probe"]["packages"][PACKAGE] == "1.0"

    code, report = _rebuild(gen_cli, gen_env, project)
    assert code == 0 and report["results"] == [], report

    repository.publish(_build_deb(tmp_path, "1.1"), "1.1")
    code, report = _rebuild(gen_cli, gen_env, project, "--dry-run")
    decisions = {d["name"]: d for d in report["decisions"]}
    assert code == 3 and report["results"] == [], report
    assert [n for n, d in decisions.items() if d["stale"]] == ["probe"], report
    assert [r["code"] for r in decisions["probe"]["reasons"]] == ["packages"]
    assert f"{PACKAGE} 1.0 -> 1.1" in decisions["probe"]["reasons"][0]["detail"]
    assert [(u["package"], u["old"], u["new"]) for u in decisions["probe"]["package_updates"]] == [
        (PACKAGE, "1.0", "1.1")
    ]

    code, report = _rebuild(gen_cli, gen_env, project)
    assert code == 3 and [(r["name"], r["action"]) for r in report["results"]] == [("probe", "rebuilt")], report
    result = report["results"][0]
    assert result["old_image_id"] != result["new_image_id"]
    assert {"package": PACKAGE, "old": "1.0", "new": "1.1"} in result["package_changes"]
    assert _installed_version(gen_host, gen_env) == "1.1"
    assert json.loads((project / "gen.lock").read_text())["images"]["probe"]["packages"][PACKAGE] == "1.1"
    markdown = (project / ".gen" / "rebuild-report.md").read_text()
    assert f"| {PACKAGE} | 1.0 | 1.1 |" in markdown

    code, report = _rebuild(gen_cli, gen_env, project)
    assert code == 0 and report["results"] == [], report
