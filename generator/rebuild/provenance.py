"""SLSA v1 provenance of a pushed image, as an in-toto v1 statement.

The build definition holds only what decides the image's bytes: the resolved spec's sha256 and the
rendered folder's (context_sha256, which covers the Dockerfile and every file it copies), the
Dockerfile's own sha256, gen's version, the platform, SOURCE_DATE_EPOCH, the base image (id, and
the parent's registry digest where gen pushed one) and the installed packages. Because gen's builds
are reproducible, two builders of the same inputs write the same build definition byte for byte;
who built it and when is in runDetails, kept apart. The statement is plain JSON with sorted keys:
the in-toto-attestation package offers protobuf classes for it, which would add protobuf to gen's
dependencies for a document this small.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from generator.builder.host import Host, host_platform
from generator.builder.outputs import OutputImage
from generator.contract import MANIFEST, LockedBase, LockedImage, Manifest
from generator.publish.attach import (
    attach_attestation,
    check_image_signatures,
    envelope_statement,
    read_attestations,
    sbom_tag,
)
from generator.publish.signing import ManifestCheck, Signer
from generator.publish.skopeo import Skopeo
from generator.publish.target import Registry
from generator.publish.transfer import Transferred
from generator.rebuild.lock import locked_units, read_lock

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/gen-s6-images/gen/build/v1"
DISTRIBUTION = "gen-s6-images"


def gen_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def builder_id(env: dict[str, str]) -> str:
    """Who ran the build: GEN_BUILDER_ID, else the CI job's URL (GitLab, GitHub), else "local"."""
    if env.get("GEN_BUILDER_ID"):
        return env["GEN_BUILDER_ID"]
    if env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return "local"


def build_definition(image: OutputImage, entry: LockedImage, platform: str) -> dict:
    """The deterministic part: what the image's bytes follow from (entry: its lock entry as built,
    for the one platform)."""
    manifest = Manifest.read(image.directory / MANIFEST)
    dockerfile = hashlib.sha256((image.directory / "Dockerfile").read_bytes()).hexdigest()
    dependencies = [
        _base_dependency(entry.base),
        *({"uri": _package_purl(name, version)} for name, version in sorted(entry.packages.items())),
    ]
    return {
        "buildType": BUILD_TYPE,
        "externalParameters": {
            "spec": manifest.spec,
            "resolvedSpecSha256": manifest.resolved_spec_sha256,
            "platform": platform,
        },
        "internalParameters": {
            "genVersion": gen_version(),
            "sourceDateEpoch": manifest.source_date_epoch,
            "contextSha256": manifest.context_sha256,
            "dockerfileSha256": dockerfile,
            "imageId": entry.image_id,
        },
        "resolvedDependencies": dependencies,
    }


def _base_dependency(base: LockedBase) -> dict:
    """The base as a resolved dependency: by reference, or gen:<parent> for the parent spec's image."""
    dependency: dict = {
        "name": "base",
        "uri": base.ref or f"gen:{base.name or ''}",
        "digest": {"sha256": _hex(base.image_id)},
    }
    if base.digest:
        dependency["annotations"] = {"registryDigest": base.digest}
    return dependency


def _hex(value: str) -> str:
    return value.removeprefix("sha256:")


def _package_purl(name: str, version: str) -> str:
    """A package URL; ?arch= for a package the lock keys as name:arch (installed for several)."""
    package, _, arch = name.partition(":")
    return f"pkg:deb/debian/{package}@{version}" + (f"?arch={arch}" if arch else "")


def statement(repository: str, digest: str, definition: dict, builder: str, started: str, finished: str) -> bytes:
    """The in-toto statement for manifest digest of repository, as the bytes that are signed."""
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": _hex(digest)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": definition,
            "runDetails": {
                "builder": {"id": builder},
                "metadata": {"startedOn": started, "finishedOn": finished},
            },
        },
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def statement_subject(data: bytes) -> tuple[str, str, dict]:
    """(repository, sha256:digest, build definition) of a statement; ValueError if it is not one."""
    try:
        document = json.loads(data)
        if document["_type"] != STATEMENT_TYPE or document["predicateType"] != PREDICATE_TYPE:
            raise ValueError(f"a {document['predicateType']} statement")
        (subject,) = document["subject"]
        return subject["name"], "sha256:" + subject["digest"]["sha256"], document["predicate"]["buildDefinition"]
    except (KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"not a SLSA provenance statement ({exc})") from None


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def attest_pushed(
    host: Host,
    images: dict[str, OutputImage],
    pushed: Transferred,
    prefix: str,
    registry: Registry,
    signer: Signer,
    env: dict[str, str],
    started: str,
) -> Transferred:
    """pushed, with a signed provenance statement attached to each image manifest the push signed
    (each platform's image; an index has no build of its own)."""
    image = images[pushed.name]
    by_platform = dict(pushed.platforms)
    skopeo = Skopeo(host)
    attested = []
    platforms = {p for p, digest in pushed.platforms if digest in pushed.signed} if image.platforms else None
    for unit, entry in locked_units(host, images, pushed.name, prefix, platforms):
        digest = by_platform.get(unit.platform, "") if image.platforms else pushed.digest
        if not digest or digest not in pushed.signed:
            continue
        definition = build_definition(unit, entry, unit.platform or host_platform())
        body = statement(registry.repository(image.repo), digest, definition, builder_id(env), started, utc_now())
        attach_attestation(skopeo, registry, image.repo, digest, body, PREDICATE_TYPE, signer)
        attested.append(digest)
    return replace(pushed, attested=tuple(attested))


@dataclass(frozen=True)
class ManifestVerdict:
    """One manifest of a checked image: its digest, what it is, and what is wrong (none: trusted)."""

    digest: str
    what: str  # "index", "image", or the platform of an index's image
    problems: tuple[str, ...]


def verify_pushed(
    host: Host, registry: Registry, name: str, tag: str, public_key, project: Path | None
) -> list[ManifestVerdict]:
    """Every manifest registry/name:tag stands for: signed by public_key for this repository; each
    image manifest also with a provenance statement signed by it naming this digest and, given the
    project, the committed spec's hash and gen.lock's base; and an SBOM beside it."""
    skopeo = Skopeo(host)
    repository = registry.repository(name)
    manifest = (
        Manifest.read(project / "output" / name / MANIFEST)
        if project and (project / "output" / name).is_dir()
        else None
    )
    locked = read_lock(project).images.get(name) if project else None
    verdicts = []
    for check in check_image_signatures(skopeo, registry, name, tag, public_key):
        problems = [f"signature: {check.problem}"] if check.problem else []
        if check.what != "index":
            problems += _provenance_problems(skopeo, registry, name, check, public_key, manifest, locked)
            if skopeo.digest(f"{repository}:{sbom_tag(check.digest)}", registry.tls_verify) is None:
                problems.append("no SBOM beside it (run `gen sbom` before `gen push`)")
        verdicts.append(ManifestVerdict(check.digest, check.what, tuple(problems)))
    return verdicts


def _provenance_problems(
    skopeo: Skopeo,
    registry: Registry,
    name: str,
    check: ManifestCheck,
    public_key,
    manifest: Manifest | None,
    locked: LockedImage | None,
) -> list[str]:
    statements = [
        envelope_statement(envelope, public_key)
        for envelope, _ in read_attestations(skopeo, registry, name, check.digest)
    ]
    signed = [s for s in statements if s is not None]
    if not signed:
        return ["provenance: none signed by this key"]
    for body in signed:
        try:
            _, digest, definition = statement_subject(body)
        except ValueError:
            continue
        # Bound to the digest, not to the repository it was first pushed to (the subject's name):
        # a retagged image keeps its provenance, as its signature check binds the repository.
        if digest != check.digest:
            continue
        problems = []
        spec_sha = definition.get("externalParameters", {}).get("resolvedSpecSha256")
        if manifest is not None and spec_sha != manifest.resolved_spec_sha256:
            problems.append(
                f"provenance: built from a spec whose hash is {spec_sha}, the committed one's is "
                f"{manifest.resolved_spec_sha256}"
            )
        base: dict = next((d for d in definition.get("resolvedDependencies", []) if d.get("name") == "base"), {})
        want = _locked_base_id(locked, check.what)
        if want and base.get("digest", {}).get("sha256") != _hex(want):
            problems.append(f"provenance: base {base.get('digest', {}).get('sha256')}, gen.lock has {_hex(want)}")
        return problems
    return ["provenance: signed, but for another image"]


def _locked_base_id(locked: LockedImage | None, what: str) -> str:
    """The base image id gen.lock records for one platform's image (what), or ""."""
    if locked is None:
        return ""
    if what in locked.platforms:
        return locked.platforms[what].base.image_id
    return locked.base.image_id if what == "image" else ""


def provenance_differences(
    first: Host, second: Host, images: dict[str, OutputImage], names: list[str], prefix: str
) -> dict[str, list[str]]:
    """Per image of names built in both storages (check_reproducible's two rounds): the build
    definitions its provenance would carry, per platform, that are not the same bytes."""
    found: dict[str, list[str]] = {}
    for name in names:
        if name not in images:  # a platform's build unit: its image's entry covers it
            continue
        a = locked_units(first, images, name, prefix)
        b = {unit.name: entry for unit, entry in locked_units(second, images, name, prefix)}
        for unit, entry in a:
            platform = unit.platform or host_platform()
            one = json.dumps(build_definition(unit, entry, platform), sort_keys=True)
            other = json.dumps(build_definition(unit, b[unit.name], platform), sort_keys=True)
            if one != other:
                found.setdefault(name, []).append(f"{platform}: {_first_difference(one, other)}")
    return found


def _first_difference(one: str, other: str) -> str:
    at = next((i for i, (x, y) in enumerate(zip(one, other, strict=False)) if x != y), min(len(one), len(other)))
    return f"from {one[max(0, at - 40) : at + 40]!r} vs {other[max(0, at - 40) : at + 40]!r}"
