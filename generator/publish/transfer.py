"""`gen push`, `gen pull`, `gen retag`: every tag of each image, the build-id tag `gen-<key>` included.

An image goes from storage to the registry once, under its build-id tag; its other tags are
registry-side copies of that manifest (--preserve-digests), so every tag has the same digest and
no layer is compressed twice. A pull copies one tag and gives the rest in storage, so the image
id (the config digest) is the one the build made and `gen build` recognises it as up to date.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

from generator.builder import storage
from generator.builder.host import Host, host_platform
from generator.builder.outputs import OutputImage, image_units, platform_suffix, primary_platform
from generator.errors import UsageError
from generator.publish.attach import attach_sbom, attach_signature
from generator.publish.index import index_build_id, push_index
from generator.publish.policy import PullGate
from generator.publish.signing import Signer
from generator.publish.skopeo import RegistryError, Skopeo
from generator.publish.target import Registry

BUILD_ID_PREFIX = "gen-"


@dataclass(frozen=True)
class Transferred:
    """One image moved: its tags (build-id tags last), manifest digest and image id."""

    name: str
    tags: tuple[str, ...]
    digest: str
    image_id: str
    source: str
    destination: str
    sbom_tag: str | None = None  # where its SBOM was attached, when it had one for this build
    platforms: tuple[tuple[str, str], ...] = ()  # (platform, digest) of each image an index joins
    signed: tuple[str, ...] = ()  # the manifest digests whose signatures were pushed
    attested: tuple[str, ...] = ()  # the manifest digests a signed provenance statement was attached to


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def local_ref(prefix: str, name: str, tag: str) -> str:
    return f"{prefix}/{name}:{tag}"


def stored_tags(host: Host, prefix: str, image: OutputImage) -> tuple[storage.StoredImage, list[str]]:
    """The image under its first spec tag in storage, and its tags to carry: the spec's tags, then
    the build-id tags that name the same image."""
    ref = local_ref(prefix, image.repo, image.tags[0])
    found = storage.inspect(host, ref)
    if found is None:
        raise RegistryError(
            f"{image.name}: {ref} is not in the storage gen uses; run `gen build {image.repo}` (or `gen pull`) first"
        )
    repo = f"{prefix}/{image.repo}:"
    build_ids = sorted(
        n[len(repo) :] for n in found.names if n.startswith(repo) and n[len(repo) :].startswith(BUILD_ID_PREFIX)
    )
    return found, [*image.tags, *build_ids]


def push_image(
    host: Host,
    image: OutputImage,
    prefix: str,
    registry: Registry,
    skopeo: Skopeo | None = None,
    only: tuple[str, ...] = (),
    index_only: bool = False,
    signer: Signer | None = None,
) -> Transferred:
    """Push one image with all its tags (an index of its platforms' images when the spec names them).
    only: push just these platforms' images, no index (one CI job per platform); index_only: join
    the platforms' images already in the registry into the index, uploading no image. signer:
    sign every manifest pushed (each platform's image and the index)."""
    skopeo = skopeo or Skopeo(host)
    if image.platforms:
        pushed = _push_platforms(host, image, prefix, registry, skopeo, only, index_only)
        digests = [d for _, d in pushed.platforms if not index_only] + ([pushed.digest] if pushed.digest else [])
        return _signed(pushed, skopeo, registry, image.name, digests, signer)
    if index_only:  # one platform: its image is all there is to push
        return Transferred(image.name, (), "", "", f"{prefix}/{image.repo}", registry.repository(image.repo))
    found, tags = stored_tags(host, prefix, image)
    first = next((t for t in tags if t.startswith(BUILD_ID_PREFIX)), tags[0])
    digest = skopeo.push(local_ref(prefix, image.repo, first), registry, image.repo, first)
    _copy_tags(skopeo, registry, image.repo, first, digest, [t for t in tags if t != first])
    ordered = tuple(sorted(tags, key=lambda t: t.startswith(BUILD_ID_PREFIX)))
    attached = attach_sbom(skopeo, image.directory.parent, image.repo, found.id, digest, registry)
    pushed = Transferred(
        image.name,
        ordered,
        digest,
        found.id,
        f"{prefix}/{image.repo}",
        registry.repository(image.repo),
        attached.tag if attached else None,
    )
    return _signed(pushed, skopeo, registry, image.repo, [digest], signer)


def _signed(
    pushed: Transferred, skopeo: Skopeo, registry: Registry, name: str, digests: list[str], signer: Signer | None
) -> Transferred:
    """pushed, with a signature pushed beside each of digests when there is a signer."""
    if signer is None:
        return pushed
    for digest in digests:
        attach_signature(skopeo, registry, name, digest, signer)
    return replace(pushed, signed=tuple(digests))


def _copy_tags(skopeo: Skopeo, registry: Registry, name: str, first: str, digest: str, tags: list[str]) -> None:
    """Registry-side copies of name:first under tags, each checked to keep the digest."""
    for tag in tags:
        copied = skopeo.copy_tag(registry, first, registry, tag, name)
        if copied != digest:
            raise RegistryError(
                f"{name}: {registry.repository(name)}:{tag} got digest {copied}, "
                f"not {digest} like {first}; the registry rewrote the manifest"
            )


def _push_platforms(
    host: Host,
    image: OutputImage,
    prefix: str,
    registry: Registry,
    skopeo: Skopeo,
    only: tuple[str, ...],
    index_only: bool,
) -> Transferred:
    """Each platform's image under its build-id and TAG-SUFFIX tags, then one index of them all
    under the spec's tags and the index's build-id tag (module index)."""
    units = image_units(image, host_platform())
    _check_platforms(image, only)
    pushed: dict[str, tuple[str, str, str, str | None]] = {}  # platform -> build id, digest, image id, SBOM tag
    for unit in units:
        if not index_only and (not only or unit.platform in only):
            pushed[unit.platform] = _push_platform(host, image, unit, prefix, registry, skopeo)
        elif not only:  # pushed before, e.g. by this platform's CI job
            digest, tags = registry_tags(skopeo, registry, replace(unit, tags=_suffixed(image, unit)))
            pushed[unit.platform] = (next((t for t in tags if t.startswith(BUILD_ID_PREFIX)), ""), digest, "", None)
    platforms = tuple((p, pushed[p][1]) for p in image.platforms or () if p in pushed)
    if only:  # no index: digest "" and the tags of the platforms' images
        platform_tags = tuple(
            t for u in units if u.platform in pushed for t in (*_suffixed(image, u), pushed[u.platform][0])
        )
        return Transferred(
            image.name,
            platform_tags,
            "",
            "",
            f"{prefix}/{image.name}",
            registry.repository(image.name),
            None,
            platforms,
        )
    first = index_build_id([pushed[u.platform][0] for u in units])
    digests = [pushed[u.platform][1] for u in units]
    index_digest = push_index(host, registry, image.name, digests, first, image.image_format)
    _copy_tags(skopeo, registry, image.name, first, index_digest, list(image.tags))
    _, _, image_id, sbom = pushed[primary_platform(image, host_platform())]
    return Transferred(
        image.name,
        (*image.tags, first),
        index_digest,
        image_id,
        f"{prefix}/{image.name}",
        registry.repository(image.name),
        sbom,
        platforms,
    )


def _push_platform(
    host: Host, image: OutputImage, unit: OutputImage, prefix: str, registry: Registry, skopeo: Skopeo
) -> tuple[str, str, str, str | None]:
    """One platform's image under its build id and TAG-SUFFIX (the plain tags are the index's),
    its SBOM beside it (cosign's scheme is per image digest): (build id, digest, image id, SBOM tag)."""
    found, tags = stored_tags(host, prefix, unit)
    build_id = next(t for t in tags if t.startswith(BUILD_ID_PREFIX))
    digest = skopeo.push(local_ref(prefix, image.name, build_id), registry, image.name, build_id)
    _copy_tags(skopeo, registry, image.name, build_id, digest, list(_suffixed(image, unit)))
    attached = attach_sbom(skopeo, image.directory.parent, image.name, found.id, digest, registry, unit.name)
    return build_id, digest, found.id, attached.tag if attached else None


def _suffixed(image: OutputImage, unit: OutputImage) -> tuple[str, ...]:
    """The registry tags of one platform's image: the spec's tags with the platform's suffix."""
    return tuple(f"{t}-{platform_suffix(unit.platform)}" for t in image.tags)


def _check_platforms(image: OutputImage, only: tuple[str, ...]) -> None:
    unknown = [p for p in only if p not in (image.platforms or ())]
    if unknown:
        raise UsageError(
            f"{image.name} is not built for {', '.join(unknown)} "
            f"(its platforms: {', '.join(image.platforms or ('the host',))})"
        )


def push_images(
    host: Host,
    images: dict[str, OutputImage],
    names: list[str],
    prefix: str,
    registry: Registry,
    progress: Progress = _quiet,
    only: tuple[str, ...] = (),
    index_only: bool = False,
    signer: Signer | None = None,
) -> list[Transferred]:
    """Push names (parents first) with all their tags (see push_image for only, index_only, signer)."""
    skopeo = Skopeo(host)
    done = []
    for name in names:
        progress(f"pushing {name} to {registry.repository(name)}")
        done.append(push_image(host, images[name], prefix, registry, skopeo, only, index_only, signer))
    return done


def registry_tags(skopeo: Skopeo, registry: Registry, image: OutputImage) -> tuple[str, list[str]]:
    """The digest of the image's first spec tag in the registry and its tags to carry: the spec's
    tags and the build-id tags with that same digest."""
    repository = registry.repository(image.repo)
    digest = skopeo.digest(f"{repository}:{image.tags[0]}", registry.tls_verify)
    if digest is None:
        raise RegistryError(
            f"{image.name}: {repository}:{image.tags[0]} does not exist; push it first "
            f"(`gen push {image.repo} --registry {registry}`)"
        )
    tags = list(image.tags)
    for tag in skopeo.tags(registry, image.repo):
        if tag.startswith(BUILD_ID_PREFIX) and skopeo.digest(f"{repository}:{tag}", registry.tls_verify) == digest:
            tags.append(tag)
    return digest, tags


@dataclass(frozen=True)
class _PullUnit:
    """One manifest to pull: the image (or one platform's image), the registry tags it is under,
    its digest there, and the tags it gets in storage (spec tags, then build-id tags)."""

    image: OutputImage
    remote_tags: tuple[str, ...]
    digest: str
    tags: tuple[str, ...]


def _pull_units(image: OutputImage, registry: Registry, skopeo: Skopeo, only: tuple[str, ...]) -> list[_PullUnit]:
    """What pulling the image means: the one manifest, or each platform's (only those in `only`,
    when given) from its TAG-SUFFIX tags under the tags `gen build` gives it."""
    if not image.platforms:
        return [_resolve(skopeo, registry, image, image.tags)]
    _check_platforms(image, only)
    return [
        _resolve(skopeo, registry, unit, _suffixed(image, unit))
        for unit in image_units(image, host_platform())
        if not only or unit.platform in only
    ]


def _resolve(skopeo: Skopeo, registry: Registry, image: OutputImage, remote_tags: tuple[str, ...]) -> _PullUnit:
    """The manifest the registry has under remote_tags, checked to be one."""
    digest, tags = registry_tags(skopeo, registry, replace(image, tags=remote_tags))
    repository = registry.repository(image.repo)
    missing = [t for t in remote_tags[1:] if skopeo.digest(f"{repository}:{t}", registry.tls_verify) != digest]
    if missing:
        raise RegistryError(
            f"{image.name}: tag(s) {', '.join(missing)} in {repository} do not name the same "
            f"image as {remote_tags[0]}; push the image again"
        )
    build_ids = tuple(t for t in tags if t.startswith(BUILD_ID_PREFIX))
    return _PullUnit(image, remote_tags, digest, (*image.tags, *build_ids))


def _import(host: Host, skopeo: Skopeo, registry: Registry, unit: _PullUnit, prefix: str, policy: list[str]) -> str:
    """Copy the unit's manifest, by digest (what was checked is what arrives), into storage under
    its tags; its image id."""
    image = unit.image
    first = local_ref(prefix, image.repo, image.tags[0])
    remote = f"{registry.repository(image.repo)}@{unit.digest}"
    skopeo.pull_ref(remote, registry.tls_verify, first, policy)
    found = storage.inspect(host, first)
    if found is None:
        raise RegistryError(f"{image.name}: {first} missing right after the pull")
    storage.tag(host, found.id, [local_ref(prefix, image.repo, t) for t in unit.tags[1:]])
    return found.id


def _transferred(
    image: OutputImage, units: list[_PullUnit], ids: list[str], registry: Registry, prefix: str, skopeo: Skopeo
) -> Transferred:
    repository = registry.repository(image.name)
    if not image.platforms:
        (unit,) = units
        return Transferred(image.name, unit.tags, unit.digest, ids[0], repository, f"{prefix}/{image.name}")
    index = skopeo.digest(f"{repository}:{image.tags[0]}", registry.tls_verify) or ""
    primary = next((n for n, u in enumerate(units) if u.image.name == image.name), 0)
    return Transferred(
        image.name,
        image.tags,
        index,
        ids[primary],
        repository,
        f"{prefix}/{image.name}",
        None,
        tuple((u.image.platform, u.digest) for u in units),
    )


def pull_images(
    host: Host,
    images: dict[str, OutputImage],
    names: list[str],
    prefix: str,
    registry: Registry,
    progress: Progress = _quiet,
    only: tuple[str, ...] = (),
    gate: PullGate | None = None,
) -> list[Transferred]:
    """Pull the named images with all their tags. Every manifest is found, and passed by the
    gate (the containers policy, signatures checked), before any is copied: a refusal changes
    nothing in storage."""
    skopeo = Skopeo(host)
    gate = gate or PullGate(None)
    planned = {}
    for name in names:
        progress(f"checking {name} in {registry.repository(name)}")
        planned[name] = _pull_units(images[name], registry, skopeo, only)
    flags = {
        (name, unit.digest): gate.admit(registry, unit.image.repo, unit.remote_tags[0], unit.digest, skopeo)
        for name, units in planned.items()
        for unit in units
    }
    done = []
    for name, units in planned.items():
        progress(f"pulling {name} from {registry.repository(name)}")
        ids = [_import(host, skopeo, registry, unit, prefix, flags[name, unit.digest]) for unit in units]
        done.append(_transferred(images[name], units, ids, registry, prefix, skopeo))
    return done


ATTACHMENT_PREFIX = "sha256-"  # cosign's tags beside an image: .sig, .att, and gen's .sbom


def retag_image(
    host: Host,
    image: OutputImage,
    source: Registry,
    destination: Registry,
    skopeo: Skopeo | None = None,
    signer: Signer | None = None,
) -> Transferred:
    """Copy every tag of the image's repository from source to destination, digests unchanged.
    Signatures name the repository they were made for, so with a signer every manifest the
    image's tags stand for (an index and its platforms' images) is signed for destination too."""
    skopeo = skopeo or Skopeo(host)
    tags = skopeo.tags(source, image.name)
    if not tags:
        raise RegistryError(f"{image.name}: {source.repository(image.name)} has no tags; push it there first")
    digests = {}
    for tag in tags:
        before = skopeo.digest(f"{source.repository(image.name)}:{tag}", source.tls_verify)
        after = skopeo.copy_tag(source, tag, destination, tag, image.name)
        if before != after:
            raise RegistryError(f"{image.name}:{tag}: digest changed in the copy ({before} -> {after})")
        digests[tag] = after
    first = image.tags[0] if image.tags[0] in digests else tags[0]
    ordered = tuple(sorted(tags, key=lambda t: (t.startswith(BUILD_ID_PREFIX), t)))
    copied = Transferred(
        image.name, ordered, digests[first], "", source.repository(image.name), destination.repository(image.name)
    )
    if signer is None:
        return copied
    images = {d for t, d in digests.items() if not t.startswith(ATTACHMENT_PREFIX)}
    manifests = sorted(
        images | {d for digest in images for d in _index_entries(skopeo, destination, image.name, digest)}
    )
    return _signed(copied, skopeo, destination, image.name, manifests, signer)


def _index_entries(skopeo: Skopeo, registry: Registry, name: str, digest: str) -> list[str]:
    """The manifests an index joins ([] for an image's own manifest)."""
    raw = skopeo.raw_manifest(f"{registry.repository(name)}@{digest}", registry.tls_verify)
    try:
        return [entry["digest"] for entry in json.loads(raw or b"{}").get("manifests", [])]
    except (ValueError, TypeError, KeyError, AttributeError):
        raise RegistryError(f"{registry.repository(name)}@{digest}: not a manifest gen can read") from None


def retag_images(
    host: Host,
    images: dict[str, OutputImage],
    names: list[str],
    source: Registry,
    destination: Registry,
    progress: Progress = _quiet,
    signer: Signer | None = None,
) -> list[Transferred]:
    skopeo = Skopeo(host)
    done = []
    for name in names:
        progress(f"copying {source.repository(name)} to {destination.repository(name)}")
        done.append(retag_image(host, images[name], source, destination, skopeo, signer))
    return done
