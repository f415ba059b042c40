"""What crosses a stage boundary on disk: the manifest render writes into each `output/<name>/`
and build, publish, rebuild and verify read; the lock (`gen.lock`) rebuild writes and reads back
in a later run; and the resolved spec render embeds in each image and verify reads back. One
class per record, each with the one `to_json`/`from_json` pair that writes and reads it; no
other code touches the JSON. The manifest and the lock carry a format version, and a reader
refuses any version but its own.

A manifest names its image's base in one of four ways (`kind`): a root filesystem bootstrapped
by gen, an image from a registry pinned by digest, an image in local storage, or the parent spec's
image. Build turns a bootstrap base into one per platform (`for_platform`); the others are
resolved per platform by the engine itself.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from generator.errors import GenError, UsageError
from generator.platforms import Platform

MANIFEST = "gen-manifest.json"
# Bumped when a manifest field is added, dropped or changes meaning. It never reaches an image:
# .dockerignore keeps the manifest out of the build context and context_sha256 leaves it out.
# (builder.outputs.files_sha256, the build key's input, does hash every file of the folder.)
MANIFEST_VERSION = 1
STRUCTURE_TEST = "structure-test.yaml"  # beside the manifest: checks users run, not build context
ImageFormat = Literal["oci", "docker"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("oci", "docker")


def context_sha256(files: Iterable[tuple[str, int, bytes]]) -> str:
    """The digest of a build context the manifest records: each file (path relative to the
    folder, mode, bytes) in path order; the manifest and the structure test are not in it."""
    h = hashlib.sha256()
    for path, mode, data in sorted(files, key=lambda f: f[0]):
        try:
            entry = f"{path}\0{mode:o}\0{len(data)}\0".encode()
        except UnicodeEncodeError:
            # A name that is not UTF-8 (Python holds its bytes as lone surrogates): Dockerfile
            # COPY and an image layer's tar paths want UTF-8, so refuse it rather than hash it.
            raise not_utf8_name(path) from None
        h.update(entry)
        h.update(data)
    return h.hexdigest()


def not_utf8_name(path: str) -> UsageError:
    """The error for a file name that is not UTF-8 (os.listdir gives its bytes as lone surrogates)."""
    return UsageError(
        f"{_shown_name(path)}: the file name is not UTF-8, which image layers need; rename it to a UTF-8 name"
    )


def _shown_name(path: str) -> str:
    """path printable: the bytes of a name the file system gave as \\xNN (its original bytes)."""
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate not from undecodable bytes
        return path.encode("utf-8", "backslashreplace").decode()
    return raw.decode("utf-8", "backslashreplace")


def read_json(path: Path, error: Callable[[str], GenError], fix: str, *, too_deep: str = "nested too deeply") -> object:
    """The JSON document in path, as every reader of a file a user may have edited parses it:
    whatever keeps it from being one (unreadable, not UTF-8, not JSON, nested past Python's
    recursion limit, an integer of more digits than int() converts) becomes
    error("<path>[:line:col]: <what>; <fix>"), one line. A missing file raises
    FileNotFoundError as is: what that means is each reader's own (none yet, or render first)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{path}: unreadable ({exc.strerror or exc}); {fix}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 (byte {exc.start}: {exc.reason}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); {fix}") from None
    except RecursionError:
        raise error(f"{path}: {too_deep}; {fix}") from None
    except ValueError:  # the only other ValueError json.loads raises: int()'s digit limit
        limit = sys.get_int_max_str_digits()
        raise error(f"{path}: a number of more than {limit} digits, longer than any gen writes; {fix}") from None


def canonical_json(data: object) -> str:
    """The text of a manifest and of an embedded spec: sorted keys, two-space indent, UTF-8 as
    is, so the same record is the same bytes anywhere."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


class ManifestError(UsageError):
    """A manifest gen cannot use (missing, not JSON, another version, a field of the wrong type): re-render it."""


_MANIFEST_FIX = "run `gen render` with this gen version"


def _fail(path: Path, what: str) -> ManifestError:
    return ManifestError(f"{path}: {what}; {_MANIFEST_FIX}")


@dataclass(frozen=True)
class BootstrapBase:
    """A root filesystem gen bootstraps with mmdebstrap and imports as `image`."""

    image: str
    distro: str
    release: str
    variant: str
    components: tuple[str, ...]
    include: tuple[str, ...]
    snapshot: str | None
    source_date_epoch: int | None
    mirror: str | None = None  # the spec's base.bootstrap.mirror; absent when unset (then GEN_MIRROR or the host's)
    platform: Platform | None = None  # set per build unit of a foreign platform (see for_platform)
    kind: ClassVar[Literal["bootstrap"]] = "bootstrap"

    def for_platform(self, platform: str) -> BootstrapBase:
        """The base of the unit built for another platform than the host's: its own rootfs."""
        target = Platform.parse(platform)
        return replace(self, image=f"{self.image}-{target.suffix}", platform=target)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "kind": self.kind,
            "image": self.image,
            "distro": self.distro,
            "release": self.release,
            "variant": self.variant,
            "components": list(self.components),
            "include": list(self.include),
            "snapshot": self.snapshot,
            "source_date_epoch": self.source_date_epoch,
        }
        if self.mirror is not None:
            data["mirror"] = self.mirror
        return data


@dataclass(frozen=True)
class _ByReference:
    """A base that is an existing image, named by reference."""

    image: str
    kind: ClassVar[str]

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "image": self.image}


@dataclass(frozen=True)
class RegistryBase(_ByReference):
    """An image from a registry, `ref@sha256:...`."""

    kind: ClassVar[Literal["image"]] = "image"


@dataclass(frozen=True)
class LocalBase(_ByReference):
    """An image already in local storage, by reference."""

    kind: ClassVar[Literal["local"]] = "local"


@dataclass(frozen=True)
class ParentBase(_ByReference):
    """The parent spec's image, `<prefix>/<parent>:<its first tag>`."""

    kind: ClassVar[Literal["parent"]] = "parent"


Base = BootstrapBase | RegistryBase | LocalBase | ParentBase


def base_from_json(data: object, path: Path) -> Base:
    """A manifest's base entry; path names the manifest in errors."""
    if not isinstance(data, dict) or not isinstance(data.get("image"), str):
        raise _fail(path, "base must be an object with an image")
    kind, image = data.get("kind"), data["image"]
    if kind == "image":
        return RegistryBase(image)
    if kind == "local":
        return LocalBase(image)
    if kind == "parent":
        return ParentBase(image)
    if kind != "bootstrap":
        raise _fail(path, f"base kind {kind!r} is none of bootstrap, image, local, parent")
    try:
        return BootstrapBase(
            image=image,
            distro=str(data["distro"]),
            release=str(data["release"]),
            variant=str(data["variant"]),
            components=tuple(map(str, data["components"])),
            include=tuple(map(str, data["include"])),
            snapshot=_optional_str(data["snapshot"]),
            source_date_epoch=_optional_int(data["source_date_epoch"]),
            mirror=_optional_str(data.get("mirror")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"bootstrap base lacks or garbles {exc}") from None


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"source_date_epoch {value!r}")
    return value


def _pairs(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return tuple(sorted((str(k), str(v)) for k, v in value.items()))


@dataclass(frozen=True)
class InitPins:
    """The init layer's pinned artifacts, as the plan resolved them (s6-overlay: the version and
    every release file's sha256 the build verifies); the lock records them beside each image."""

    kind: str  # s6 | s6-overlay | none; "unknown" in a manifest from before this field
    version: str | None = None
    checksums: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind}
        if self.version:
            data["version"] = self.version
        if self.checksums:
            data["checksums"] = dict(self.checksums)
        return data

    @classmethod
    def from_json(cls, data: object) -> InitPins:
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise TypeError("init is not an object with a kind")
        return cls(data["kind"], _optional_str(data.get("version")), _pairs(data.get("checksums") or {}))


@dataclass(frozen=True)
class Manifest:
    """`output/<name>/gen-manifest.json`: sorted keys, no timestamps (output/ is the same on every
    machine). context_sha256 covers every file of the folder but this one and the structure test."""

    name: str
    tags: tuple[str, ...]
    spec: str  # the spec file, relative to the project root
    resolved_spec_sha256: str
    templates_sha256: str
    parent: str | None
    base: Base
    source_date_epoch: int
    overlays: tuple[str, ...]  # overlay directories, relative to the project root
    platforms: tuple[str, ...] | None  # None: the build host's
    # Build arguments naming a directory of the build host gen serves on loopback during the
    # build (s6-overlay tarballs from init.source), and per platform build arguments.
    served_dirs: tuple[tuple[str, str], ...] = ()
    platform_build_args: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = field(default=())
    init: InitPins = InitPins("unknown")
    image_format: ImageFormat = "oci"  # docker: the image has a HEALTHCHECK, which OCI cannot hold
    context_sha256: str = ""

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "manifest_version": MANIFEST_VERSION,
            "name": self.name,
            "tags": list(self.tags),
            "spec": self.spec,
            "resolved_spec_sha256": self.resolved_spec_sha256,
            "templates_sha256": self.templates_sha256,
            "parent": self.parent,
            "base": self.base.to_json(),
            "source_date_epoch": self.source_date_epoch,
            "overlays": list(self.overlays),
            "platforms": list(self.platforms) if self.platforms else None,
            "init": self.init.to_json(),
            "image_format": self.image_format,
        }
        if self.served_dirs:
            data["served_dirs"] = dict(self.served_dirs)
        if self.platform_build_args:
            data["platform_build_args"] = {p: dict(args) for p, args in self.platform_build_args}
        if self.context_sha256:
            data["context_sha256"] = self.context_sha256
        return data

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = read_json(path, ManifestError, _MANIFEST_FIX, too_deep="nested deeper than any manifest gen writes")
        except FileNotFoundError:
            raise ManifestError(f"{path}: missing; run `gen render` first") from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: object, path: Path) -> Manifest:
        if not isinstance(data, dict):
            raise _fail(path, "not a JSON object")
        _check_manifest_version(data, path)
        missing = [k for k in ("name", "tags", "base", "source_date_epoch", "context_sha256") if k not in data]
        if missing:
            raise _fail(path, f"manifest lacks {', '.join(missing)}")
        try:
            platforms = data.get("platforms")
            build_args = data.get("platform_build_args") or {}
            return cls(
                name=str(data["name"]),
                tags=tuple(map(str, data["tags"])),
                spec=str(data.get("spec", "")),
                resolved_spec_sha256=str(data.get("resolved_spec_sha256", "")),
                templates_sha256=str(data.get("templates_sha256", "")),
                parent=_optional_str(data.get("parent")),
                base=base_from_json(data["base"], path),
                source_date_epoch=int(data["source_date_epoch"]),
                overlays=tuple(map(str, data.get("overlays") or ())),
                platforms=tuple(map(str, platforms)) if platforms else None,
                served_dirs=_pairs(data.get("served_dirs") or {}),
                platform_build_args=tuple(sorted((str(p), _pairs(a)) for p, a in _items(build_args))),
                init=InitPins.from_json(data["init"]) if "init" in data else InitPins("unknown"),
                image_format=_image_format(data.get("image_format", "oci")),
                context_sha256=str(data["context_sha256"]),
            )
        except (TypeError, ValueError, OverflowError) as exc:  # Overflow: int() of 1e999, which JSON reads as inf
            raise _fail(path, f"a field has the wrong type ({exc})") from None


def _check_manifest_version(data: dict, path: Path) -> None:
    """Checked before any other field: another version's fields may mean something else."""
    if "manifest_version" not in data:
        raise _fail(path, "no manifest_version (rendered by a gen from before manifests had one)")
    version = data["manifest_version"]
    if type(version) is not int or version != MANIFEST_VERSION:  # type(): True == 1 in Python
        raise _fail(path, f"manifest_version {version!r} is not {MANIFEST_VERSION}, the one this gen reads")


def _image_format(value: object) -> ImageFormat:
    for known in IMAGE_FORMATS:
        if value == known:
            return known
    raise ValueError(f"image_format {value!r}")


def _items(value: object) -> list[tuple[object, object]]:
    if not isinstance(value, dict):
        raise TypeError("platform_build_args is not an object")
    return list(value.items())


# --- gen.lock --------------------------------------------------------------------------------
# The lock's records, reader and text live here beside the manifest's, so one module holds every
# format gen reads back from disk. Making an entry from storage needs the builder and publish
# stages (which import this module), so that stays in generator.rebuild.lock with the file's
# path and its atomic write.

# gen.lock has carried lock_version 1 since its first release, so every lock gen wrote reads, and
# one without a version is not gen's. Bumped when an entry's fields change.
LOCK_VERSION = 1
_LOCK_FIX = "restore it from git or run `gen lock --update`"

BaseKind = Literal["bootstrap", "image", "local", "parent"]
BASE_KINDS: tuple[BaseKind, ...] = ("bootstrap", "image", "local", "parent")


class LockError(UsageError):
    """A gen.lock gen cannot use (not JSON, another version, a field missing or of the wrong type)."""


@dataclass(frozen=True)
class LockedBase:
    """What an image was built on, as storage had it: the parent spec's image (name), or a
    bootstrapped rootfs, registry or local image (ref; a registry base also its pinned digest)."""

    kind: BaseKind
    image_id: str  # "" when it was not in storage
    ref: str | None = None  # every kind but parent
    name: str | None = None  # parent: the parent spec's name
    digest: str | None = None  # image: the manifest digest its ref pins

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "image_id": self.image_id}
        data |= {k: v for k, v in (("ref", self.ref), ("name", self.name), ("digest", self.digest)) if v is not None}
        return data

    @classmethod
    def from_json(cls, data: object, what: str) -> LockedBase:
        entry = _record(data, what, ("kind", "image_id"), ("ref", "name", "digest"))
        return cls(
            kind=_base_kind(entry["kind"], what),
            image_id=_text(entry["image_id"], f"{what} image_id"),
            ref=_optional_text(entry.get("ref"), f"{what} ref"),
            name=_optional_text(entry.get("name"), f"{what} name"),
            digest=_optional_text(entry.get("digest"), f"{what} digest"),
        )


@dataclass(frozen=True)
class LockedPlatform:
    """One platform's image of an image built for several."""

    build_id: str
    image_id: str
    base: LockedBase
    packages: dict[str, str]  # name[:arch] -> version

    def to_json(self) -> dict[str, object]:
        return {
            "build_id": self.build_id,
            "image_id": self.image_id,
            "base": self.base.to_json(),
            "packages": dict(self.packages),
        }

    @classmethod
    def from_json(cls, data: object, what: str) -> LockedPlatform:
        entry = _record(data, what, ("build_id", "image_id", "base", "packages"))
        return cls(
            build_id=_text(entry["build_id"], f"{what} build_id"),
            image_id=_text(entry["image_id"], f"{what} image_id"),
            base=LockedBase.from_json(entry["base"], f"{what} base"),
            packages=_text_map(entry["packages"], f"{what} packages"),
        )


_LOCKED_IMAGE_FIELDS = ("name", "parent", "tags", "build_id", "image_id", "digest", "files_sha256", "base", "init")


@dataclass(frozen=True)
class LockedImage:
    """What one built image was made from and of. An image built for several platforms: the
    fields are the host's platform's image's, `digest` the index's, and `platforms` has each."""

    name: str
    parent: str | None
    tags: tuple[str, ...]
    build_id: str
    image_id: str
    digest: str  # manifest digest in the registry; "" until pushed
    files_sha256: str  # the rendered folder's, as the build keyed on it
    base: LockedBase
    init: InitPins  # copied from the manifest
    packages: dict[str, str] = field(default_factory=dict)  # name[:arch] -> version
    platforms: dict[str, LockedPlatform] = field(default_factory=dict)  # os/arch -> its image

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "parent": self.parent,
            "tags": list(self.tags),
            "build_id": self.build_id,
            "image_id": self.image_id,
            "digest": self.digest,
            "files_sha256": self.files_sha256,
            "base": self.base.to_json(),
            "init": self.init.to_json(),
            "packages": dict(self.packages),
            "platforms": {p: self.platforms[p].to_json() for p in self.platforms},
        }

    @classmethod
    def from_json(cls, data: object, what: str) -> LockedImage:
        # packages and platforms came later than the rest: entries from before lack them.
        entry = _record(data, what, _LOCKED_IMAGE_FIELDS, ("packages", "platforms"))
        platforms = entry.get("platforms", {})
        if not isinstance(platforms, dict):
            raise ValueError(f"{what} platforms is not an object")
        return cls(
            name=_text(entry["name"], f"{what} name"),
            parent=_optional_text(entry["parent"], f"{what} parent"),
            tags=_texts(entry["tags"], f"{what} tags"),
            build_id=_text(entry["build_id"], f"{what} build_id"),
            image_id=_text(entry["image_id"], f"{what} image_id"),
            digest=_text(entry["digest"], f"{what} digest"),
            files_sha256=_text(entry["files_sha256"], f"{what} files_sha256"),
            base=LockedBase.from_json(entry["base"], f"{what} base"),
            init=_init_pins(entry["init"], f"{what} init"),
            packages=_text_map(entry.get("packages", {}), f"{what} packages"),
            platforms={p: LockedPlatform.from_json(e, f"{what} platform {p!r}") for p, e in platforms.items()},
        )


@dataclass
class Lock:
    """`gen.lock`: per image what it was built from and of; sorted keys, two-space indent, so
    the same images give the same bytes. Mutable: a run updates it image by image."""

    registry: str = ""
    images: dict[str, LockedImage] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "lock_version": LOCK_VERSION,
            "registry": self.registry,
            "images": {n: self.images[n].to_json() for n in sorted(self.images)},
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> Lock:
        """The lock at path; an empty one when there is none yet."""
        try:
            data = read_json(path, LockError, _LOCK_FIX)
        except FileNotFoundError:
            return cls()
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: object, path: Path) -> Lock:
        if not isinstance(data, dict):
            raise LockError(f"{path}: not a JSON object; {_LOCK_FIX}")
        _check_lock_version(data, path)
        try:
            images = data.get("images") or {}
            if not isinstance(images, dict):
                raise ValueError("images is not an object")
            return cls(
                registry=_text(data.get("registry") or "", "registry"),
                images={name: LockedImage.from_json(entry, f"image {name!r}") for name, entry in images.items()},
            )
        except ValueError as exc:
            raise LockError(f"{path}: {exc}; {_LOCK_FIX}") from None


def _check_lock_version(data: dict, path: Path) -> None:
    version = data.get("lock_version")
    if type(version) is int and version > LOCK_VERSION:  # type(): True == 1 in Python
        raise LockError(f"{path}: lock_version {version} is newer than this gen reads ({LOCK_VERSION}); upgrade gen")
    if type(version) is not int or version != LOCK_VERSION:
        what = "no lock_version" if version is None else f"lock_version {version!r} is not {LOCK_VERSION}"
        raise LockError(f"{path}: {what}, so gen did not write it; {_LOCK_FIX}")


def _record(value: object, what: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """value as a JSON object with every required key and no key gen does not write."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    unknown = sorted(str(k) for k in value if k not in required and k not in optional)
    if unknown:
        raise ValueError(f"{what} has fields gen does not write: {', '.join(unknown)}")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, not a string")
    return value


def _optional_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _texts(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return tuple(_text(v, what) for v in value)


def _text_map(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return {_text(k, what): _text(v, f"{what} {k!r}") for k, v in value.items()}


def _base_kind(value: object, what: str) -> BaseKind:
    for kind in BASE_KINDS:
        if value == kind:
            return kind
    raise ValueError(f"{what} kind {value!r} is none of {', '.join(BASE_KINDS)}")


def _init_pins(value: object, what: str) -> InitPins:
    try:
        return InitPins.from_json(value)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from None


# --- the embedded spec -----------------------------------------------------------------------


class EmbeddedSpecError(UsageError):
    """An embedded spec that is not one JSON object (verify then holds the image to the defaults)."""


@dataclass(frozen=True)
class EmbeddedSpec:
    """The resolved spec render bakes into every image (/etc/gen/spec.json; `gen-spec` prints
    it) and verify reads back, from this gen's images or any other's. Its fields are the spec
    schema's and the spec stage checks them: this module stays free of jsonschema, which build
    must not load, so the record vouches only for one JSON object. It carries no version: a
    field in it would change every image's bytes, and an older document reads through the
    schema's defaults (one the schema refuses is reported by verify)."""

    document: dict[str, Any]

    def to_json(self) -> str:
        """Canonical text (sorted keys, indented): the same spec is the same image bytes anywhere."""
        return canonical_json(self.document)

    @classmethod
    def from_json(cls, text: str, where: str) -> EmbeddedSpec:
        """where: the file's path in the image, for errors."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise EmbeddedSpecError(f"{where}: nested deeper than any spec is") from None
        except ValueError as exc:
            raise EmbeddedSpecError(f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise EmbeddedSpecError(f"{where}: not a JSON object")
        return cls(data)
