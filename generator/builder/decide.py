"""Deciding whether an image needs building, and saying why.

An image's build id is `gen-<first 16 hex of its content key>`; the key hashes the rendered
directory (paths, modes, bytes), the parent's image id and the base's image id. When the build-id
tag exists the image is up to date. Otherwise the inputs recorded at its previous build (a small
JSON file under the state directory) say what changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from generator.builder.outputs import build_id_tag, content_key
from generator.files import write_text_atomic


class Reason(StrEnum):
    """Why an image is built, or not: the one vocabulary of `gen build`, which says the text, and
    `gen rebuild`, whose reports name the code beside a detail."""

    UP_TO_DATE = "up to date"
    NEW = "new"
    CHANGED = "spec or context changed"
    PARENT_REBUILT = "parent rebuilt"
    BASE_MOVED = "base moved"
    BASE_MISSING = "base not in storage yet"
    TAGS_MOVED = "tags point elsewhere"
    IMAGE_MISSING = "image no longer in storage"
    PACKAGES = "newer packages in the index"  # only the scheduled rebuild asks the index

    @property
    def code(self) -> str:
        return self.name.lower().replace("_", "-")


UP_TO_DATE, NEW, CHANGED, PARENT_REBUILT = Reason.UP_TO_DATE, Reason.NEW, Reason.CHANGED, Reason.PARENT_REBUILT
BASE_MOVED, BASE_MISSING, TAGS_MOVED, IMAGE_MISSING = (
    Reason.BASE_MOVED,
    Reason.BASE_MISSING,
    Reason.TAGS_MOVED,
    Reason.IMAGE_MISSING,
)


@dataclass(frozen=True)
class BuildRecord:
    """The inputs and result of an image's last successful build."""

    files_sha256: str
    parent_id: str
    base_id: str
    key: str
    image_id: str


def record_path(state_dir: Path, name: str) -> Path:
    return state_dir / "builds" / f"{name}.json"


def read_record(state_dir: Path, name: str) -> BuildRecord | None:
    try:
        return BuildRecord(**json.loads(record_path(state_dir, name).read_text()))
    except (OSError, ValueError, TypeError, RecursionError):  # absent or damaged: build again
        return None


def write_record(state_dir: Path, name: str, record: BuildRecord) -> None:
    write_text_atomic(record_path(state_dir, name), json.dumps(asdict(record), indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Decision:
    action: str  # "build", "skip" (up to date) or "retag" (built before, tags moved away)
    reasons: tuple[str, ...]
    key: str | None  # None while a parent or the base is still to be built

    @property
    def build_id(self) -> str | None:
        return build_id_tag(self.key) if self.key else None


def why_changed(
    record: BuildRecord | None, files_hash: str, parent_id: str | None, base_id: str | None
) -> tuple[str, ...]:
    """Reasons to build, from the previous build's inputs. An id is "" when it does not apply
    (a root image has no parent; a child's base is its parent) and None while still to be built."""
    if record is None:
        return (NEW, BASE_MISSING) if base_id is None else (NEW,)
    reasons = []
    if record.files_sha256 != files_hash:
        reasons.append(CHANGED)
    if parent_id is None or parent_id != record.parent_id:
        reasons.append(PARENT_REBUILT)
    if base_id is None:
        reasons.append(BASE_MISSING)
    elif base_id != record.base_id:
        reasons.append(BASE_MOVED)
    return tuple(reasons) or (IMAGE_MISSING,)


def decide(
    files_hash: str,
    parent_id: str | None,
    base_id: str | None,
    record: BuildRecord | None,
    build_id_exists: Callable[[str], bool],
    tags_in_place: Callable[[str], bool],
    platform: str = "",
) -> Decision:
    """The decision for one image (ids as in why_changed). build_id_exists(tag) and
    tags_in_place(tag) answer from storage; platform is set for one platform of several."""
    if parent_id is None or base_id is None:
        return Decision("build", why_changed(record, files_hash, parent_id, base_id), None)
    key = content_key(files_hash, parent_id, base_id, platform)
    tag = build_id_tag(key)
    if build_id_exists(tag):
        if tags_in_place(tag):
            return Decision("skip", (UP_TO_DATE,), key)
        return Decision("retag", (TAGS_MOVED,), key)
    return Decision("build", why_changed(record, files_hash, parent_id, base_id), key)
