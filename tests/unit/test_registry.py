"""Unit tests of the registry stage's pure parts: targets, TLS policy, scrubbing, dpkg and DEP-5
parsing, apt simulation parsing, the lock file, SBOM content and the rebuild report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from generator.builder.outputs import OutputImage
from generator.contract import InitPins, LockedBase, LockedPlatform
from generator.errors import UsageError
from generator.publish.skopeo import scrub
from generator.publish.target import is_loopback, parse_registry
from generator.rebuild.lock import Lock, LockedImage, package_changes, read_lock, write_lock
from generator.rebuild.packages import Package, dep5_licenses, parse_status, to_spdx
from generator.rebuild.sbom import build_sbom, sbom_json
from generator.rebuild.scheduled import (
    EXIT_FAILED,
    EXIT_NOTHING,
    EXIT_REBUILT,
    Outcome,
    Verdict,
    exit_code,
    pipeline_report,
    read_plan,
    report_data,
    report_markdown,
)
from generator.rebuild.updates import parse_simulation


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.1.2.3"])
def test_insecure_allowed_for_loopback(host):
    registry = parse_registry(f"{host}/team", insecure=True)
    assert registry.tls_verify is False
    assert is_loopback(registry.host)


@pytest.mark.parametrize(
    "host",
    ["registry.example.com", "10.0.0.5:5000", "192.168.1.1:443", "[2001:db8::1]:5000", "localhost.example.com:5000"],
)
def test_insecure_refused_elsewhere(host):
    with pytest.raises(UsageError) as info:
        parse_registry(f"{host}/team", insecure=True)
    assert info.value.exit_code == 2
    assert "loopback" in str(info.value)


def test_tls_on_by_default_and_refs():
    registry = parse_registry("registry.example.com:443/org/sub")
    assert registry.tls_verify is True
    assert registry.ref("app", "1.0") == "docker://registry.example.com:443/org/sub/app:1.0"
    assert str(registry) == "registry.example.com:443/org/sub"


@pytest.mark.parametrize("text", ["team", "", "registry.example.com/Team", "registry.example.com/a//b", "a b/c"])
def test_bad_targets_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_registry(text)


def test_scrub_removes_credentials():
    text = 'Get "https://user:s3cret@registry.example.com/v2/": password=hunter2 "auth": "dXNlcjpwYXNz"'
    cleaned = scrub(text)
    for secret in ("s3cret", "hunter2", "dXNlcjpwYXNz", "user:"):
        assert secret not in cleaned
    assert "registry.example.com" in cleaned


STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library
 long text

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Source: bash (5.2.15-2)
Version: 5.2.15-2+b2
"""


def test_parse_status_keeps_installed_with_source_versions():
    packages = parse_status(STATUS)
    assert [p.name for p in packages] == ["bash", "libc6"]
    bash, libc = packages
    assert (bash.source, bash.source_version, bash.version) == ("bash", "5.2.15-2", "5.2.15-2+b2")
    assert (libc.source, libc.source_version) == ("glibc", "2.36-9+deb12u4")


DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: thing

Files: *
Copyright: 2020 Someone
License: GPL-2+

Files: lib/*
Copyright: 2021 Other
License: Expat or BSD-3-clause

License: GPL-2+
 This program is free software...
"""


def test_dep5_licenses_mapped_to_spdx():
    assert dep5_licenses(DEP5) == ("GPL-2.0-or-later", "MIT", "BSD-3-Clause")


def test_free_text_copyright_gives_no_license():
    assert dep5_licenses("This package was debianized by someone.\nIt is GPL licensed.\n") == ()


@pytest.mark.parametrize(
    "name,spdx",
    [
        ("GPL-3", "GPL-3.0-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("Apache-2.0", "Apache-2.0"),
        ("custom-thing", "custom-thing"),
    ],
)
def test_to_spdx(name, spdx):
    assert to_spdx(name) == spdx


SIMULATION = """\
Reading package lists...
Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable [all])
Inst libc6 [2.36-9+deb12u4] (2.36-9+deb12u10 Debian-Security:12/stable-security [amd64]) []
Conf tzdata (2025b-0+deb12u1 Debian:12.11/stable [all])
"""


def test_simulation_parsed_security_first():
    updates = parse_simulation(SIMULATION)
    assert [(u.package, u.old, u.new, u.security) for u in updates] == [
        ("libc6", "2.36-9+deb12u4", "2.36-9+deb12u10", True),
        ("tzdata", "2024a-0+deb12u1", "2025b-0+deb12u1", False),
    ]


def test_simulation_without_updates():
    assert parse_simulation("Reading package lists...\n0 upgraded, 0 newly installed\n") == []


def _locked(name="app", **overrides) -> LockedImage:
    fields = dict(
        name=name,
        parent=None,
        tags=("1.0",),
        build_id="gen-0123456789abcdef",
        image_id="a" * 64,
        digest="sha256:" + "b" * 64,
        files_sha256="c" * 64,
        base=LockedBase("bootstrap", "d" * 64, ref="localhost/gen/rootfs:x"),
        init=InitPins("s6-overlay", "3.1.6.2", (("s6-overlay-noarch.tar.xz", "e" * 64),)),
        packages={"libc6": "2.36-9", "bash": "5.2"},
    )
    fields.update(overrides)
    return LockedImage(**fields)


def test_lock_round_trip_and_no_rewrite(tmp_path: Path):
    lock = Lock("127.0.0.1:5000/team", {"app": _locked()})
    assert write_lock(tmp_path, lock) is True
    mtime = (tmp_path / "gen.lock").stat().st_mtime_ns
    assert write_lock(tmp_path, read_lock(tmp_path)) is False
    assert (tmp_path / "gen.lock").stat().st_mtime_ns == mtime
    again = read_lock(tmp_path)
    assert again.images["app"] == lock.images["app"] and again.registry == lock.registry


def test_lock_keeps_each_platform_and_reads_entries_written_before_platforms(tmp_path: Path):
    base = LockedBase("bootstrap", "d" * 64, ref="localhost/gen/rootfs:x")
    platforms = {
        "linux/amd64": LockedPlatform("gen-1", "a" * 64, base, {"s6": "2"}),
        "linux/arm64": LockedPlatform("gen-2", "f" * 64, replace(base, image_id="9" * 64), {"s6": "2"}),
    }
    write_lock(tmp_path, Lock("", {"multi": _locked("multi", platforms=platforms), "plain": _locked("plain")}))
    text = json.loads((tmp_path / "gen.lock").read_text())
    del text["images"]["plain"]["platforms"]  # as gen wrote it before platforms existed
    (tmp_path / "gen.lock").write_text(json.dumps(text))
    again = read_lock(tmp_path)
    assert again.images["multi"].platforms == platforms and again.images["plain"].platforms == {}


def test_missing_lock_is_empty_and_broken_lock_is_bad_input(tmp_path: Path):
    assert read_lock(tmp_path).images == {}
    (tmp_path / "gen.lock").write_text('{"lock_version": 1,\n "images": [}')
    with pytest.raises(UsageError) as info:
        read_lock(tmp_path)
    assert "gen.lock:2:" in str(info.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"lock_version": 2, "images": {"app": []}}', "lock_version 2 is newer than this gen reads (1); upgrade gen"),
        ('{"lock_version": 1, "images": {"app": {"name": "app"}}}', "image 'app' lacks parent, tags, build_id"),
    ],
)
def test_a_lock_from_a_newer_gen_or_a_broken_entry_is_one_clear_line(tmp_path: Path, text, says):
    (tmp_path / "gen.lock").write_text(text)
    with pytest.raises(UsageError) as info:
        read_lock(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'gen.lock'}: {says}") and "\n" not in str(info.value)


def test_package_changes():
    assert package_changes({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "1"}) == [
        {"package": "b", "old": "2", "new": "3"},
        {"package": "c", "old": "", "new": "1"},
    ]


def test_sbom_has_packages_licenses_base_and_init(tmp_path: Path):
    image = OutputImage("app", tmp_path, ("1.0",), None, {"kind": "bootstrap"}, 1700000000, "specs/app.yaml", ())
    packages = [
        Package("bash", "5.2", "amd64", "bash", "5.2", ("GPL-3.0-or-later", "GPL-3+ with Bison exception")),
        Package("libc6", "2.36-9", "amd64", "glibc", "2.36-9"),
    ]
    text = sbom_json(build_sbom(image, _locked(), packages, "debian", "bookworm"))
    data = json.loads(text)
    assert data["bomFormat"] == "CycloneDX" and data["specVersion"] == "1.6"
    by_name = {c["name"]: c for c in data["components"]}
    assert by_name["bash"]["purl"] == "pkg:deb/debian/bash@5.2?arch=amd64&distro=debian-bookworm"
    assert [lic["license"].get("id") or lic["license"].get("name") for lic in by_name["bash"]["licenses"]] == [
        "GPL-3.0-or-later",
        "GPL-3+ with Bison exception",
    ]
    assert "licenses" not in by_name["libc6"]
    assert "upstream=glibc" in by_name["libc6"]["purl"]
    assert by_name["s6-overlay-noarch.tar.xz"]["hashes"] == [{"alg": "SHA-256", "content": "e" * 64}]
    assert by_name["localhost/gen/rootfs:x"]["hashes"][0]["content"] == "d" * 64
    assert data["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    # Same image, same SBOM.
    assert text == sbom_json(build_sbom(image, _locked(), packages, "debian", "bookworm"))


def _outcome(action: str) -> Outcome:
    return Outcome("app", action, [], "", "", "", "", "passed")


@pytest.mark.parametrize(
    "actions,code",
    [
        ([], EXIT_NOTHING),
        (["unchanged"], EXIT_NOTHING),
        (["rebuilt"], EXIT_REBUILT),
        (["adopted"], EXIT_REBUILT),
        (["rebuilt", "failed"], EXIT_FAILED),
        (["skipped-after-failure"], EXIT_FAILED),
    ],
)
def test_exit_codes(actions, code):
    assert exit_code([_outcome(a) for a in actions]) == code


def test_report_names_reasons_and_package_changes():
    verdict = Verdict("runtime")
    verdict.add("base-moved", "parent debian-s6 changed in the registry: sha256:1 -> sha256:2")
    outcome = Outcome(
        "runtime",
        "rebuilt",
        verdict.reasons,
        "sha256:old",
        "sha256:new",
        "i1",
        "i2",
        "passed",
        [{"package": "libc6", "old": "1", "new": "2"}],
    )
    data = report_data([verdict, Verdict("leaf")], [outcome], False, parse_registry("127.0.0.1:5000/t", True), 0.0)
    assert data["exit_code"] == EXIT_REBUILT
    text = report_markdown(data)
    assert "| runtime | rebuild | (base-moved) parent debian-s6 changed" in text
    assert "| leaf | up to date | - |" in text
    assert "| libc6 | 1 | 2 |" in text and "sha256:old" in text and "sha256:new" in text
    failed = Outcome("leaf", "failed", [], "", "", "", "", "skipped", error="boom | twice\nsecond line")
    text = report_markdown(report_data([verdict, Verdict("leaf")], [outcome, failed], False, None, 0.0))
    assert text.startswith("# gen rebuild report\n\nRegistry: none (nothing pushed); took ")
    assert (
        "\n### Package changes in runtime\n\n| package | old | new |\n| --- | --- | --- |\n| libc6 | 1 | 2 |\n" in text
    )
    assert text.endswith("\n### leaf failed\n\n```\nboom | twice\nsecond line\n```\n")
    assert "\n\n\n" not in text


def test_dry_run_report_exit_code_says_what_would_happen():
    stale = Verdict("a")
    stale.add("changed", "spec changed")
    assert report_data([stale], [], True, None, 0.0)["exit_code"] == EXIT_REBUILT
    assert report_data([Verdict("a")], [], True, None, 0.0)["exit_code"] == EXIT_NOTHING


def test_transient_registry_errors_are_recognised():
    from generator.publish.skopeo import is_transient

    assert is_transient("failed to read from destination repository other/app: 500 (Internal Server Error)")
    assert is_transient("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer")
    assert not is_transient("manifest unknown: manifest unknown")
    assert not is_transient("unauthorized: authentication required (401)")


# -- SBOM attached beside its image ------------------------------------------------------------


def test_sbom_artifact_layout_is_content_addressed(tmp_path):
    import hashlib

    from generator.publish.attach import SBOM_MEDIA_TYPE, sbom_tag, write_layout

    digest = write_layout(tmp_path / "layout", b'{"bomFormat": "CycloneDX"}', SBOM_MEDIA_TYPE, {"k": "v"})
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    manifest = json.loads((blobs / digest.split(":")[1]).read_text())
    assert [layer["mediaType"] for layer in manifest["layers"]] == [SBOM_MEDIA_TYPE]
    assert (blobs / manifest["layers"][0]["digest"].split(":")[1]).read_bytes() == b'{"bomFormat": "CycloneDX"}'
    assert sbom_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32 + ".sbom"


def test_only_an_sbom_of_this_build_is_attached(tmp_path):
    from generator.publish.attach import attach_sbom
    from generator.publish.target import Registry

    class RecordingSkopeo:
        pushed: list[str] = []

        def push_layout(self, layout, registry, name, tag):
            self.pushed.append(tag)
            return "sha256:" + "cd" * 32

    sbom = {"metadata": {"component": {"hashes": [{"alg": "SHA-256", "content": "1" * 64}]}}}
    (tmp_path / "app.sbom.cdx.json").write_text(json.dumps(sbom))
    skopeo, registry = RecordingSkopeo(), Registry("127.0.0.1:5000", "org", tls_verify=False)
    assert attach_sbom(skopeo, tmp_path, "app", "2" * 64, "sha256:" + "ef" * 32, registry) is None
    assert attach_sbom(skopeo, tmp_path, "other", "1" * 64, "sha256:" + "ef" * 32, registry) is None
    attached = attach_sbom(skopeo, tmp_path, "app", "1" * 64, "sha256:" + "ef" * 32, registry)
    assert attached is not None and attached.tag == "sha256-" + "ef" * 32 + ".sbom"
    assert skopeo.pushed == [attached.tag]


def _plan(*verdicts: Verdict) -> dict:
    return report_data(list(verdicts), [], True, None, 1.5)


def test_a_ci_runs_report_comes_from_its_plan_and_the_lock_before_and_after():
    """`gen lock --update --plan plan.json` in the pipeline's last job: each image the plan named,
    with what the level jobs left in the lock."""
    stale = Verdict("app", [{"code": "packages", "detail": "libc6 2.36-9 -> 2.36-10"}])
    adopted = Verdict("other", adopt_digest="sha256:" + "9" * 64)
    before = Lock("r/t", {"app": _locked(), "kept": _locked("kept"), "other": _locked("other")})
    after = Lock(
        "r/t",
        {
            "app": _locked(image_id="f" * 64, digest="sha256:new", packages={"libc6": "2.36-10", "bash": "5.2"}),
            "kept": _locked("kept"),
            "other": _locked("other", digest="sha256:" + "9" * 64),
        },
    )
    data = pipeline_report(_plan(stale, Verdict("kept"), adopted), before, after, "r/t")
    assert [(r["name"], r["action"], r["verify"]) for r in data["results"]] == [
        ("app", "rebuilt", "passed"),
        ("other", "adopted", "passed"),
    ]
    assert data["results"][0]["package_changes"] == [{"package": "libc6", "old": "2.36-9", "new": "2.36-10"}]
    assert data["exit_code"] == EXIT_REBUILT and data["dry_run"] is False
    text = report_markdown(data)
    assert "a run of the CI pipeline" in text and "| app | rebuild | (packages) libc6 2.36-9 -> 2.36-10 |" in text
    assert "| app | rebuilt | sha256:" + "b" * 64 + " | sha256:new | passed |" in text


def test_a_ci_run_where_an_image_is_missing_from_the_lock_reports_it_failed():
    data = pipeline_report(_plan(Verdict("app", [{"code": "changed", "detail": "spec"}])), Lock(), Lock(), None)
    assert [(r["name"], r["action"]) for r in data["results"]] == [("app", "failed")]
    assert data["exit_code"] == EXIT_FAILED


@pytest.mark.parametrize(
    "text, why",
    [
        ("{", "Expecting"),
        ("[]", "no dry-run decisions"),
        ('{"dry_run": false, "decisions": []}', "no dry-run decisions"),
        ('{"dry_run": true, "decisions": [{"name": "a"}]}', "without name or reasons"),
        ('{"dry_run": true, "decisions": [{"name": "a", "reasons": []}]}', "lacks stale or adopt"),
    ],
)
def test_a_plan_that_is_not_a_dry_run_is_one_clear_line(tmp_path: Path, text: str, why: str):
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(
        UsageError, match=f"--plan .*plan.json: not the output of `gen rebuild --dry-run --json` .*{why}"
    ):
        read_plan(path)
    with pytest.raises(UsageError, match="No such file"):
        read_plan(tmp_path / "absent.json")
