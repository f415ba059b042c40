"""The lock file `gen.lock` (JSON, in the project root): what each built image was made from and of.

Per image: its build id and content key inputs (rendered files hash), image id and registry digest,
its base (bootstrapped rootfs image id, registry base digest, or parent image id and digest), the
init layer (s6-overlay version and the sha256 of each tarball; for the distro's s6 the packages say
it), and every installed package with its version, read from the image's dpkg database.

It lives beside specs/, not in output/<name>/: files there are build inputs (the content key
hashes them) and `gen render` owns them. Its records, its text and its reader are in
`generator.contract` with the other formats gen reads back; this module makes the entries from
storage and writes the file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from generator.builder import storage
from generator.builder.host import Host, host_platform
from generator.builder.outputs import OutputImage, expand_platforms, files_sha256, units_of
from generator.contract import Lock, LockedBase, LockedImage, LockedPlatform
from generator.files import write_text_atomic
from generator.publish.transfer import stored_tags
from generator.rebuild.packages import installed_packages

LOCK_FILE = "gen.lock"


def lock_path(project: Path) -> Path:
    return project / LOCK_FILE


def read_lock(project: Path) -> Lock:
    """The project's lock; an empty one when there is none yet."""
    return Lock.read(lock_path(project))


def write_lock(project: Path, lock: Lock) -> bool:
    """Write atomically, only when the text changes (so git and mtimes see no churn). True if written."""
    return write_text_atomic(lock_path(project), lock.to_json())


def base_entry(host: Host, image: OutputImage, prefix: str, parent: OutputImage | None = None) -> LockedBase:
    """What the image was built on: the parent's image id, the bootstrapped rootfs image id, or
    the registry base's pinned digest (and its id in storage)."""
    if image.parent:
        ref = f"{prefix}/{parent.repo}:{parent.tags[0]}" if parent else image.base.image
        found = storage.inspect(host, ref)
        return LockedBase("parent", found.id if found else "", name=parent.repo if parent else image.parent)
    kind, ref = image.base.kind, image.base.image
    found = storage.inspect(host, ref)
    digest = ref.split("@", 1)[1] if kind == "image" and "@" in ref else None
    return LockedBase(kind, found.id if found else "", ref=ref, digest=digest)


def locked_image(host: Host, images: dict[str, OutputImage], name: str, prefix: str, digest: str = "") -> LockedImage:
    """The lock entry of an image as it is in storage now (it must be built): for an image with
    several platforms, the primary platform's entry with every platform's under `platforms`."""
    units = locked_units(host, images, name, prefix)
    if len(units) == 1 and not images[name].platforms:
        return replace(units[0][1], digest=digest)
    primary = next(entry for unit, entry in units if unit.name == name)
    per_platform = {unit.platform: LockedPlatform(e.build_id, e.image_id, e.base, e.packages) for unit, e in units}
    return replace(primary, digest=digest, platforms=per_platform)


def locked_units(
    host: Host, images: dict[str, OutputImage], name: str, prefix: str, platforms: set[str] | None = None
) -> list[tuple[OutputImage, LockedImage]]:
    """Each platform's build unit of the image (one for an image without platforms) with its own
    lock entry, in the spec's platform order; only those of `platforms` when given (a CI job has
    only its own platform's image in storage)."""
    units = expand_platforms(images, host_platform())
    return [
        (unit, _locked_unit(host, units, unit, prefix))
        for unit in units_of(units, name)
        if platforms is None or unit.platform in platforms
    ]


def _locked_unit(host: Host, units: dict[str, OutputImage], image: OutputImage, prefix: str) -> LockedImage:
    found, tags = stored_tags(host, prefix, image)
    build_ids = [t for t in tags if t.startswith("gen-")]
    parent = units[image.parent] if image.parent else None
    packages = installed_packages(host, f"{prefix}/{image.repo}:{image.tags[0]}")
    return LockedImage(
        name=image.repo,
        parent=parent.repo if parent else None,
        tags=tuple(image.tags),
        build_id=build_ids[-1] if build_ids else "",
        image_id=found.id,
        digest="",
        files_sha256=files_sha256(image.directory),
        base=base_entry(host, image, prefix, parent),
        init=image.init,
        packages=package_versions(packages),
    )


def package_versions(packages) -> dict[str, str]:
    """name -> version; name:arch for a package installed for several architectures."""
    counts: dict[str, int] = {}
    for p in packages:
        counts[p.name] = counts.get(p.name, 0) + 1
    return {(p.name if counts[p.name] == 1 else f"{p.name}:{p.architecture}"): p.version for p in packages}


def package_changes(old: dict[str, str], new: dict[str, str]) -> list[dict[str, str]]:
    """Added, removed and changed packages between two lock entries, by name."""
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before != after:
            changes.append({"package": name, "old": before or "", "new": after or ""})
    return changes
