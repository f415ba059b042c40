"""Reading rendered `output/<name>/` directories: manifests, content hashes, dependency order."""

from __future__ import annotations

import graphlib
import hashlib
import heapq
import json
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from generator.contract import (
    MANIFEST,
    STRUCTURE_TEST,
    Base,
    BootstrapBase,
    ImageFormat,
    InitPins,
    Manifest,
    context_sha256,
)
from generator.errors import UsageError
from generator.files import first_link
from generator.schema import platform_suffix


@dataclass(frozen=True)
class OutputImage:
    """One rendered image: its directory and the manifest fields build relies on."""

    name: str
    directory: Path
    tags: tuple[str, ...]
    parent: str | None
    base: Base
    source_date_epoch: int
    spec: str
    overlays: tuple[str, ...]
    # Build arguments whose value is a directory of the build host that gen serves on 127.0.0.1
    # for the build's duration (s6-overlay tarballs from init.source: offline builds).
    served_dirs: tuple[tuple[str, str], ...] = ()
    # The spec's platforms (None: the build host's own) and, per platform, build arguments the
    # Dockerfile takes for it (the s6-overlay tarball's architecture name).
    platforms: tuple[str, ...] | None = None
    platform_build_args: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    init: InitPins = InitPins("unknown")  # the init layer's pinned artifacts, for the lock
    image_format: ImageFormat = "oci"  # buildah's --format: docker for an image with a HEALTHCHECK
    # Set on the per-platform build units expand_platforms() makes: the platform built and the
    # image's own name (the repository its tags go under; `name` is then unique per platform).
    platform: str = ""
    repository: str = ""
    # Every file's path, permission bits and bytes (files_sha256), what a build is keyed on, as
    # load_output found it; "" for an image not loaded from a folder (computed when asked).
    files_sha256: str = ""

    @property
    def base_kind(self) -> str:
        return self.base.kind

    @property
    def repo(self) -> str:
        return self.repository or self.name

    def build_args_for(self, platform: str) -> tuple[tuple[str, str], ...]:
        return dict(self.platform_build_args).get(platform, ())


def load_output(directory: Path) -> OutputImage:
    manifest = Manifest.read(directory / MANIFEST)
    if not (directory / "Dockerfile").is_file():
        raise UsageError(f"{directory}/Dockerfile: missing; run `gen render`")
    files = _check_unchanged_since_render(directory, manifest.context_sha256)
    return OutputImage(
        name=manifest.name,
        files_sha256=files,
        directory=directory,
        tags=manifest.tags,
        parent=manifest.parent,
        base=manifest.base,
        source_date_epoch=manifest.source_date_epoch,
        spec=manifest.spec,
        overlays=manifest.overlays,
        served_dirs=manifest.served_dirs,
        platforms=manifest.platforms,
        platform_build_args=manifest.platform_build_args,
        init=manifest.init,
        image_format=manifest.image_format,
    )


def _check_unchanged_since_render(directory: Path, recorded: str) -> str:
    """A folder must be what `gen render` wrote: a build of one edited by hand, or left half old
    and half new, would not be what the spec says (and no spec could reproduce it). Returns its
    files_sha256, from the same walk."""
    if (link := first_link(directory)) is not None:
        raise UsageError(
            f"{link} is a symlink (to {os.readlink(link)}): gen renders only regular files and "
            "never builds through links; remove it and run `gen render`"
        )
    context, files = folder_digests(directory)
    if context != recorded:
        raise UsageError(
            f"{directory}: its files differ from what `gen render` wrote (context_sha256 "
            f"{recorded[:12]}...); run `gen render` to re-render it, or `git checkout` the folder"
        )
    return files


# gen render never writes a link into output/: one there came with the repository.
_UNLINK = "remove the link and run `gen render`"


def load_outputs(output_dir: Path) -> dict[str, OutputImage]:
    """Every rendered image under output_dir, by name; parents must be there too."""
    if output_dir.is_symlink():
        raise UsageError(
            f"{output_dir} is a symlink (to {os.readlink(output_dir)}): gen builds only the project's "
            f"own output/; {_UNLINK}"
        )
    if not output_dir.is_dir():
        raise UsageError(f"{output_dir}: no such directory; run `gen render` first")
    images = {}
    output_dir = output_dir.absolute()  # builds run with the image directory as cwd
    for child in sorted(output_dir.iterdir()):
        if child.is_symlink():
            raise UsageError(
                f"{child} is a symlink (to {os.readlink(child)}): gen builds only folders it rendered; {_UNLINK}"
            )
        if (child / MANIFEST).is_file():
            image = load_output(child)
            images[image.name] = image
    for image in images.values():
        if image.parent and image.parent not in images:
            raise UsageError(
                f"{image.directory / MANIFEST}: parent {image.parent!r} is not rendered under "
                f"{output_dir}; run `gen render`"
            )
    return images


def topological_order(images: dict[str, OutputImage]) -> list[str]:
    """Parents before children, and of the images ready to build, the first by name: a chain is
    finished before the next begins (a platform's units together), whatever order the folders
    were listed in."""
    parents = {name: [image.parent] if image.parent else [] for name, image in images.items()}
    sorter = graphlib.TopologicalSorter(parents)
    try:
        sorter.prepare()
    except graphlib.CycleError as cycle:
        raise UsageError(f"parent cycle in output/: {' -> '.join(reversed(cycle.args[1]))}") from None
    order: list[str] = []
    ready: list[str] = []
    while sorter.is_active():
        for name in sorter.get_ready():
            heapq.heappush(ready, name)
        order.append(heapq.heappop(ready))
        sorter.done(order[-1])
    return order


def ancestors(images: dict[str, OutputImage], name: str) -> list[str]:
    """name's parents, nearest first."""
    chain = []
    parent = images[name].parent
    while parent:
        chain.append(parent)
        parent = images[parent].parent
    return chain


def dependents(images: dict[str, OutputImage], names: set[str]) -> set[str]:
    """names and every image that descends from one of them."""
    result = set(names)
    for name in images:
        if set(ancestors(images, name)) & names:
            result.add(name)
    return result


def select(images: dict[str, OutputImage], wanted: list[str]) -> list[str]:
    """The named images (all when none named), checked, in build order."""
    unknown = [n for n in wanted if n not in images]
    if unknown:
        known = ", ".join(sorted(images)) or "none"
        raise UsageError(f"unknown image {', '.join(unknown)}; rendered images: {known}")
    chosen = set(wanted) if wanted else set(images)
    return [n for n in topological_order(images) if n in chosen]


def files_sha256(directory: Path) -> str:
    """Hash of every entry under directory by relative path, permission bits and bytes (never
    mtime, so a checkout or an unchanged re-render does not look like a change). Symlinks count
    by their target text; empty directories count too, since COPY creates them."""
    return folder_digests(directory)[1]


def folder_digests(directory: Path) -> tuple[str, str]:
    """(context_sha256 as the manifest records it, files_sha256) of a folder, from one walk that
    reads each file once: a build checks the one and keys on the other."""
    context: list[tuple[str, int, bytes]] = []
    digest = hashlib.sha256()
    for path in _entries(directory):
        rel = path.relative_to(directory).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            kind, body = b"l", os.fsencode(os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            kind, body = b"d", b""
        else:
            kind, body = b"f", path.read_bytes()
            if rel not in (MANIFEST, STRUCTURE_TEST):  # modes as git keeps them: any umask agrees
                context.append((rel, 0o755 if info.st_mode & 0o100 else 0o644, body))
        # fsencode: a name that is not UTF-8 (dropped into output/ by hand) hashes as its bytes;
        # context_sha256 then refuses it with one line.
        digest.update(kind + os.fsencode(rel) + b"\0" + f"{stat.S_IMODE(info.st_mode):o}".encode() + b"\0")
        digest.update(hashlib.sha256(body).digest())
    try:
        return context_sha256(context), digest.hexdigest()
    except UsageError as problem:  # it names the file within the folder: say which folder
        raise UsageError(f"{directory}/{problem}") from None


def _entries(directory: Path) -> list[Path]:
    """Files, symlinks and empty directories under directory, sorted by path."""
    found = []
    for root, dirs, files in os.walk(directory):
        base = Path(root)
        found += [base / name for name in files]
        for name in dirs:
            path = base / name
            if path.is_symlink() or not any(path.iterdir()):
                found.append(path)
    return sorted(found)


def content_key(files_hash: str, parent_digest: str, base_digest: str, platform: str = "") -> str:
    """The build id's source: the rendered directory, the parent's digest, the base's digest, and
    for an image with several platforms the platform (each has its own key)."""
    inputs = {"files": files_hash, "parent": parent_digest, "base": base_digest}
    if platform:
        inputs["platform"] = platform
    text = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build_id_tag(key: str) -> str:
    return f"gen-{key[:16]}"


# --- platforms --------------------------------------------------------------------------------


def primary_platform(image: OutputImage, host: str) -> str:
    """The platform whose image holds the spec's plain tags in local storage: the host's when the
    image is built for it (containers run natively), else the first the spec lists."""
    platforms = image.platforms or (host,)
    return host if host in platforms else platforms[0]


def unit_name(image: OutputImage, platform: str, host: str) -> str:
    return image.name if platform == primary_platform(image, host) else f"{image.name}@{platform_suffix(platform)}"


def expand_platforms(images: dict[str, OutputImage], host: str) -> dict[str, OutputImage]:
    """One build unit per image and platform. An image without `platforms` is one unit, unchanged.
    Otherwise the primary platform's unit keeps the image's name and tags; each other platform's is
    NAME@SUFFIX with tags TAG-SUFFIX, built FROM its parent's unit of the same platform on a base
    bootstrapped for that architecture."""
    units: dict[str, OutputImage] = {}
    for image in images.values():
        if image.platforms is None:
            units[image.name] = image
            continue
        primary = primary_platform(image, host)
        for platform in image.platforms:
            name = unit_name(image, platform, host)
            suffix = "" if platform == primary else f"-{platform_suffix(platform)}"
            parent = unit_name(images[image.parent], platform, host) if image.parent else None
            units[name] = replace(
                image,
                name=name,
                repository=image.name,
                platform=platform,
                parent=parent,
                tags=tuple(f"{t}{suffix}" for t in image.tags),
                base=_platform_base(image.base, platform, host),
            )
    return units


def units_of(units: dict[str, OutputImage], name: str) -> list[OutputImage]:
    """The build units of image `name` among expand_platforms()'s, in its spec's platform order."""
    chosen = [u for u in units.values() if u.repo == name]
    order = list(chosen[0].platforms or ()) if chosen else []
    return sorted(chosen, key=lambda u: order.index(u.platform) if u.platform in order else 0)


def image_units(image: OutputImage, host: str) -> list[OutputImage]:
    """One image's build units on its own (its parent is not needed to name them)."""
    return units_of(expand_platforms({image.name: replace(image, parent=None)}, host), image.name)


def _platform_base(base: Base, platform: str, host: str) -> Base:
    """A root image's base for one platform: a bootstrapped rootfs per architecture (the host's
    keeps the plain name); a registry or local base is resolved per platform by the build."""
    if not isinstance(base, BootstrapBase) or platform == host:
        return base
    return base.for_platform(platform)
