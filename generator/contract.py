"""What crosses a stage boundary on disk: the manifest render writes into each `output/<name>/`
and build, publish, rebuild and verify read. One class per record, each with the one
`to_json`/`from_json` pair that writes and reads it; no other code touches the JSON.

A manifest names its image's base in one of four ways (`kind`): a root filesystem bootstrapped
by gen, an image from a registry pinned by digest, an image in local storage, or the parent spec's
image. Build turns a bootstrap base into one per platform (`for_platform`); the others are
resolved per platform by the engine itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

from generator.errors import UsageError
from generator.platforms import Platform

MANIFEST = "gen-manifest.json"
STRUCTURE_TEST = "structure-test.yaml"  # beside the manifest: checks users run, not build context
ImageFormat = Literal["oci", "docker"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("oci", "docker")


def context_sha256(files: Iterable[tuple[str, int, bytes]]) -> str:
    """The digest of a build context the manifest records: each file (path relative to the
    folder, mode, bytes) in path order; the manifest and the structure test are not in it."""
    h = hashlib.sha256()
    for path, mode, data in sorted(files, key=lambda f: f[0]):
        h.update(f"{path}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


class ManifestError(UsageError):
    """A manifest gen cannot use (missing, not JSON, a field of the wrong type): re-render it."""


def _fail(path: Path, what: str) -> ManifestError:
    return ManifestError(f"{path}: {what}; run `gen render` with this gen version")


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
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: missing; run `gen render` first") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(path, f"unreadable ({exc})") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); run `gen render`"
            ) from None
        except RecursionError:
            raise _fail(path, "nested deeper than any manifest gen writes") from None
        return cls.from_json(data, path)

    @classmethod
    def from_json(cls, data: object, path: Path) -> Manifest:
        if not isinstance(data, dict):
            raise _fail(path, "not a JSON object")
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
        except (TypeError, ValueError) as exc:
            raise _fail(path, f"a field has the wrong type ({exc})") from None


def _image_format(value: object) -> ImageFormat:
    for known in IMAGE_FORMATS:
        if value == known:
            return known
    raise ValueError(f"image_format {value!r}")


def _items(value: object) -> list[tuple[object, object]]:
    if not isinstance(value, dict):
        raise TypeError("platform_build_args is not an object")
    return list(value.items())
