"""SLSA provenance statements (generator.rebuild.provenance) and their DSSE envelopes: the build
definition is the same bytes for the same inputs whoever builds and whenever, and only the key's
own signature opens an envelope."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from generator.builder.outputs import load_outputs
from generator.contract import InitPins, LockedBase, LockedImage
from generator.publish.attach import dsse_envelope, envelope_statement
from generator.publish.signing import open_private_key, read_public_key, write_key_pair
from generator.rebuild.provenance import (
    PREDICATE_TYPE,
    build_definition,
    builder_id,
    statement,
    statement_subject,
)

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "12" * 32


def _entry(**overrides) -> LockedImage:
    fields = dict(
        name="runtime",
        parent="debian-s6",
        tags=("1.0",),
        build_id="gen-0123456789abcdef",
        image_id="a" * 64,
        digest="",
        files_sha256="c" * 64,
        base=LockedBase("parent", "d" * 64, name="debian-s6"),
        init=InitPins("s6"),
        packages={"libc6": "2.36-9", "bash": "5.2.15-2+b2", "libgcc-s1:i386": "12.2.0-14"},
    )
    fields.update(overrides)
    return LockedImage(**fields)


def test_the_build_definition_is_the_same_bytes_whoever_builds_and_when():
    image = load_outputs(ROOT / "output")["runtime"]
    definition = build_definition(image, _entry(), "linux/amd64")
    first = statement("r.example.com/t/runtime", DIGEST, definition, "builder-a", "2026-01-01T00:00:00Z", "x")
    second = statement(
        "r.example.com/t/runtime", DIGEST, build_definition(image, _entry(), "linux/amd64"), "b", "y", "z"
    )
    assert first != second
    assert json.loads(first)["predicate"]["buildDefinition"] == json.loads(second)["predicate"]["buildDefinition"]
    manifest = json.loads((ROOT / "output" / "runtime" / "gen-manifest.json").read_text())
    assert definition["externalParameters"] == {
        "spec": "specs/runtime.yaml",
        "resolvedSpecSha256": manifest["resolved_spec_sha256"],
        "platform": "linux/amd64",
    }
    assert definition["internalParameters"]["sourceDateEpoch"] == manifest["source_date_epoch"]
    assert definition["internalParameters"]["contextSha256"] == manifest["context_sha256"]
    uris = [d["uri"] for d in definition["resolvedDependencies"]]
    assert uris[0] == "gen:debian-s6" and definition["resolvedDependencies"][0]["digest"] == {"sha256": "d" * 64}
    assert "pkg:deb/debian/libgcc-s1@12.2.0-14?arch=i386" in uris and "pkg:deb/debian/bash@5.2.15-2+b2" in uris
    assert statement_subject(first)[:2] == ("r.example.com/t/runtime", DIGEST)
    assert json.loads(first)["predicateType"] == PREDICATE_TYPE


def test_a_dsse_envelope_opens_only_with_its_key_and_unchanged(tmp_path):
    key, pub = write_key_pair(tmp_path / "k", b"p")
    _, other = write_key_pair(tmp_path / "o", b"p")
    body = statement("r/t/x", DIGEST, {"buildType": "t"}, "b", "s", "f")
    envelope = dsse_envelope(body, open_private_key(key, b"p"))
    assert envelope_statement(envelope, read_public_key(pub)) == body
    assert envelope_statement(envelope, read_public_key(other)) is None
    document = json.loads(envelope)
    document["payload"] = base64.b64encode(body.replace(b"12", b"34", 1)).decode()
    assert envelope_statement(json.dumps(document).encode(), read_public_key(pub)) is None
    assert envelope_statement(b"not json", read_public_key(pub)) is None


def test_the_builder_is_named_by_the_ci_job_or_the_user():
    assert builder_id({}) == "local"
    assert (
        builder_id({"CI_JOB_URL": "https://gitlab.example.com/p/-/jobs/7"}) == "https://gitlab.example.com/p/-/jobs/7"
    )
    github = {"GITHUB_RUN_ID": "9", "GITHUB_REPOSITORY": "o/r", "GITHUB_SERVER_URL": "https://github.com"}
    assert builder_id(github) == "https://github.com/o/r/actions/runs/9"
    assert builder_id({**github, "GEN_BUILDER_ID": "mine"}) == "mine"


def test_two_builds_provenance_differences_name_the_platform_and_where(monkeypatch):
    """gen build --check-reproducible compares the build definition each storage's image would get."""
    import generator.rebuild.provenance as provenance

    images = load_outputs(ROOT / "output")
    first, second = object(), object()

    def units(host, images_, name, prefix, platforms=None):
        unit = images_[name]
        packages = {"libc6": "2.36-9"} if host is first else {"libc6": "2.36-10"}
        return [(unit, _entry(packages=packages if name == "runtime" else {"libc6": "2.36-9"}))]

    monkeypatch.setattr(provenance, "locked_units", units)
    found = provenance.provenance_differences(first, second, images, ["debian-s6", "runtime", "runtime@arm64"], "p")
    assert list(found) == ["runtime"]
    assert "2.36-9" in found["runtime"][0] and "2.36-10" in found["runtime"][0]


def test_provenance_is_bound_to_the_digest_not_to_the_repository_it_was_first_pushed_to(tmp_path, monkeypatch):
    """A retagged image keeps its provenance (the signature check binds the repository); a
    statement about another digest does not count for this one."""
    from generator.publish.signing import ManifestCheck
    from generator.publish.target import Registry
    from generator.rebuild import provenance

    key, pub = write_key_pair(tmp_path / "k", b"p")
    signer = open_private_key(key, b"p")
    definition = {"externalParameters": {"resolvedSpecSha256": "e" * 64}, "resolvedDependencies": []}

    def problems_with(repository: str, digest: str) -> list[str]:
        envelope = dsse_envelope(statement(repository, digest, definition, "b", "t0", "t1"), signer)
        monkeypatch.setattr(provenance, "read_attestations", lambda *_: [(envelope, "")])
        check = ManifestCheck(DIGEST, "linux/amd64")
        return provenance._provenance_problems(
            None, Registry("r.example", "moved"), "app", check, read_public_key(pub), None, None
        )

    assert problems_with("r.example/first/app", DIGEST) == []
    assert problems_with("r.example/moved/app", "sha256:" + "34" * 32) == ["provenance: signed, but for another image"]


def test_a_registry_base_is_named_by_reference_with_its_digest_and_gen_lock_gives_each_platform_its_base():
    from generator.contract import LockedPlatform
    from generator.rebuild.provenance import _locked_base_id

    image = load_outputs(ROOT / "output")["debian-s6"]
    ref = "r.example/debian:12@sha256:" + "f" * 64
    base = LockedBase("image", "sha256:" + "d" * 64, ref=ref, digest="sha256:" + "f" * 64)
    (dependency, *_) = build_definition(image, _entry(parent=None, base=base), "linux/amd64")["resolvedDependencies"]
    assert dependency == {
        "name": "base",
        "uri": ref,
        "digest": {"sha256": "d" * 64},
        "annotations": {"registryDigest": "sha256:" + "f" * 64},
    }
    arm = LockedPlatform("gen-2", "2" * 64, LockedBase("parent", "9" * 64, name="debian-s6"), {})
    locked = _entry(platforms={"linux/arm64": arm})
    assert _locked_base_id(locked, "linux/arm64") == "9" * 64
    assert _locked_base_id(locked, "image") == "d" * 64
    assert _locked_base_id(locked, "index") == "" and _locked_base_id(None, "image") == ""
