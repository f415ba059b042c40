"""The render stage: plans to the files of `output/<name>/`, in memory first, then written.

Everything is rendered before anything is written, so a bad spec or template changes nothing.
Writing touches only files whose bytes or mode changed (an unchanged file keeps its mtime, so
builders' caches stay valid), removes files the render no longer produces, and swaps the whole
new output/ in at once.
"""

from __future__ import annotations

import ctypes
import difflib
import errno
import functools
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from generator.contract import MANIFEST, Manifest
from generator.errors import GenError, UsageError
from generator.naming import STAGING_PREFIX
from generator.plan import SPEC_PATH, Plan
from generator.plan.init_layer import LOGGER_TEMPLATE_DIR
from generator.plan.structure_test import structure_test
from generator.render.templates import TemplateSet

STRUCTURE_TEST = "structure-test.yaml"
_BLANK_RUNS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class RenderedFile:
    path: str  # posix path relative to output/<name>/
    data: bytes
    mode: int  # 0o644 or 0o755; symlinks are not produced (overlays keep theirs as files' targets)


@dataclass(frozen=True)
class RenderedImage:
    name: str
    files: tuple[RenderedFile, ...]  # sorted by path, the manifest included

    def file(self, path: str) -> RenderedFile:
        return next(f for f in self.files if f.path == path)


def _normalize_dockerfile(text: str) -> str:
    return _BLANK_RUNS.sub("\n\n", text).strip("\n") + "\n"


def _file_mode(path: Path) -> int:
    """Git keeps only the executable bit, so overlays are normalized to 0755 or 0644."""
    return 0o755 if path.stat().st_mode & 0o100 else 0o644


def _overlay_files(host_dir: Path, context_dir: str) -> list[RenderedFile]:
    files = []
    for path in sorted(host_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(host_dir).as_posix()
            files.append(RenderedFile(f"{context_dir}/{rel}", path.read_bytes(), _file_mode(path)))
    return files


def _init_files(plan: Plan, templates: TemplateSet) -> list[RenderedFile]:
    if plan.init is None:
        return []
    files = []
    context = {"image": plan.image, "init_env": dict(plan.init_env)}
    for rel, source in templates.tree(plan.init.template_dir):
        data, mode = templates.file(source)
        if rel.endswith(".j2"):
            data = templates.render(f"{plan.init.template_dir}/{rel}", **context).encode()
            rel = rel[: -len(".j2")]
        files.append(RenderedFile(f"gen-init/{rel}", data, mode))
    for definition in plan.init.rc_definitions:
        where = f"gen-init/{definition.directory}"
        if definition.skeleton is not None:
            files += [
                RenderedFile(f"{where}/{rel}", *templates.file(source))
                for rel, source in templates.tree(definition.skeleton)
            ]
        files += [RenderedFile(f"{where}/{rel}", text.encode(), 0o644) for rel, text in definition.files]
    return files


def _logger_source(plan: Plan, templates: TemplateSet) -> list[RenderedFile]:
    """gen-log's C source, for the builder stage that compiles it."""
    stage = plan.init.logger_stage if plan.init is not None else None
    if stage is None:
        return []
    return [
        RenderedFile(f"{stage.context_dir}/{rel}", templates.file(source)[0], 0o644)
        for rel, source in templates.tree(LOGGER_TEMPLATE_DIR)
    ]


def _context_sha256(files: list[RenderedFile]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.mode:o}\0{len(f.data)}\0".encode())
        h.update(f.data)
    return h.hexdigest()


def folder_context_sha256(image_dir: Path) -> str:
    """context_sha256 of a rendered folder as it is on disk (the manifest records the render's):
    build compares the two to refuse a folder edited or half-replaced since `gen render`. Modes
    count as git keeps them (executable or not), so any checkout's umask agrees."""
    files = []
    for path in sorted(image_dir.rglob("*")):
        rel = path.relative_to(image_dir).as_posix()
        if path.is_file() and not path.is_symlink() and rel not in (MANIFEST, STRUCTURE_TEST):
            files.append(RenderedFile(rel, path.read_bytes(), _file_mode(path)))
    return _context_sha256(files)


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def templates_used(plan: Plan) -> tuple[str, ...]:
    """The template files and directories render_image reads for this plan."""
    parts = ["Dockerfile.j2", "dockerignore.j2", f"family/{plan.family}.j2", "features/", "stages/"]
    if plan.init is not None:
        parts.append(f"{plan.init.template_dir}/")
    if plan.init is not None and plan.init.logger_stage is not None:
        parts.append(f"{LOGGER_TEMPLATE_DIR}/")
    if plan.init is not None:
        parts += sorted({f"{d.skeleton}/" for d in plan.init.rc_definitions if d.skeleton is not None})
    return tuple(parts)


def render_image(plan: Plan, templates: TemplateSet, manifest: Manifest) -> RenderedImage:
    """Render one plan: Dockerfile, context files, .dockerignore and the manifest."""
    dockerfile = templates.render(f"family/{plan.family}.j2", plan=plan)
    files = [RenderedFile("Dockerfile", _normalize_dockerfile(dockerfile).encode(), 0o644)]
    files += _init_files(plan, templates)
    files += _logger_source(plan, templates)
    files += [RenderedFile(f"gen-config/{c.path}", c.text.encode(), c.mode) for c in plan.config_files]
    files.append(RenderedFile(f"gen-spec/{SPEC_PATH}", plan.resolved_spec_json.encode(), 0o644))
    for overlay in plan.overlays:
        files += _overlay_files(Path(overlay.host_dir), overlay.context_dir)
    context_dirs = sorted({f.path.split("/", 1)[0] for f in files if "/" in f.path})
    if plan.overlays:
        context_dirs = [d for d in context_dirs if d != "rootfs"] + [o.context_dir for o in plan.overlays]
    files.append(
        RenderedFile(".dockerignore", templates.render("dockerignore.j2", context_dirs=context_dirs).encode(), 0o644)
    )
    manifest = replace(manifest, context_sha256=_context_sha256(files))
    files.append(RenderedFile(MANIFEST, canonical_json(manifest.to_json()).encode(), 0o644))
    # Not part of the build context: checks users run against the built image.
    files.append(RenderedFile(STRUCTURE_TEST, _structure_test_text(plan).encode(), 0o644))
    return RenderedImage(plan.image.name, tuple(sorted(files, key=lambda f: f.path)))


def _structure_test_text(plan: Plan) -> str:
    header = (
        f"# container-structure-test config generated by gen from {plan.spec_file}; do not edit.\n"
        f"# Run: container-structure-test test --image IMAGE --config {STRUCTURE_TEST}\n"
    )
    return header + "".join(line + "\n" for line in yaml_lines(structure_test(plan)))


_PLAIN_TEXT = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII but " and \\: nothing to escape


@functools.lru_cache(maxsize=1 << 16)  # structure tests repeat the same paths and commands in every image
def _yaml_quote(text: str) -> str:
    """A YAML double-quoted scalar: printable ASCII as is, everything else escaped (\\uXXXX, or
    \\UXXXXXXXX beyond the BMP, which YAML has and JSON lacks)."""
    if _PLAIN_TEXT.fullmatch(text):
        return f'"{text}"'
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _yaml_scalar(value: object) -> str:
    """A YAML scalar; strings always double-quoted, so none can be read as another type."""
    if isinstance(value, str):
        return _yaml_quote(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    return _yaml_quote(str(value))


def _yaml_flow(value: object) -> str:
    """A scalar, or an empty mapping or list ({} and [])."""
    if isinstance(value, dict):
        return "{}"
    return "[]" if isinstance(value, list) else _yaml_scalar(value)


_PLAIN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}


@functools.lru_cache(maxsize=1 << 12)
def _yaml_key(key: object) -> str:
    text = str(key)
    return text if _PLAIN_KEY.match(text) and text.lower() not in _YAML_WORDS else _yaml_quote(text)


def yaml_lines(data: object, indent: str = "") -> list[str]:
    """Block-style YAML for dicts, lists and scalars, keys in the data's order (deterministic;
    several times faster than a general emitter, which dominated render time)."""
    lines: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{indent}{_yaml_key(key)}:")
                lines += yaml_lines(value, indent + ("  " if isinstance(value, dict) else ""))
            else:
                lines.append(f"{indent}{_yaml_key(key)}: {_yaml_flow(value)}")
    elif isinstance(data, list):
        for item in data:
            nested = yaml_lines(item, indent + "  ")
            if nested and isinstance(item, (dict, list)) and item:
                lines.append(f"{indent}- {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines.append(f"{indent}- {_yaml_flow(item)}")
    else:
        lines.append(f"{indent}{_yaml_scalar(data)}")
    return lines


# --- comparing with and writing to output/ -------------------------------------------------


def first_link(directory: Path) -> Path | None:
    """The first symlink in a directory tree, which is walked without following any; or None."""
    for top, dirs, files in os.walk(directory, followlinks=False):
        for name in sorted(dirs + files):
            if (Path(top) / name).is_symlink():
                return Path(top) / name
    return None


def refuse_links(output_dir: Path) -> None:
    """gen writes only regular files under output/, so a symlink there came from elsewhere (a
    repository can commit one): writing or pruning through it would change files outside the
    project, reading through it would show them. Refused before anything is read or written."""
    if output_dir.is_symlink():
        raise UsageError(
            f"{output_dir} is a symlink (to {os.readlink(output_dir)}): gen writes only inside the "
            "project; make it a real directory"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"{output_dir} is not a directory: gen renders into output/; move it away")
    if (path := first_link(output_dir)) is not None:
        raise UsageError(
            f"{path} is a symlink (to {os.readlink(path)}): gen renders only regular files "
            "into output/ and never follows links there; remove it"
        )


def _existing_files(image_dir: Path) -> dict[str, tuple[bytes, int]]:
    found = {}
    if image_dir.is_dir():
        for path in image_dir.rglob("*"):
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(image_dir).as_posix()] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return found


def stale_output_dirs(output_dir: Path, keep: set[str]) -> list[Path]:
    """gen-made image dirs in output/ whose spec is gone."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and p.name not in keep and (p / MANIFEST).is_file())


def diff_against(output_dir: Path, images: list[RenderedImage], prune: bool) -> str:
    """Unified diff from what is in output/ to what a render would write; "" when up to date."""
    refuse_links(output_dir)
    chunks: list[str] = []
    for image in images:
        existing = _existing_files(output_dir / image.name)
        wanted = {f.path: f for f in image.files}
        for path in sorted(set(existing) | set(wanted)):
            old = existing.get(path)
            new = wanted.get(path)
            old_bytes, new_bytes = (old[0] if old else b""), (new.data if new else b"")
            label = f"output/{image.name}/{path}"
            if old_bytes != new_bytes:
                chunks.append(_unified(old_bytes, new_bytes, label, old is None, new is None))
            elif old and new and old[1] != new.mode:
                chunks.append(f"mode of {label}: {old[1]:o} -> {new.mode:o}\n")
    if prune:
        for stale in stale_output_dirs(output_dir, {i.name for i in images}):
            chunks.append(f"output/{stale.name}/: no spec renders it any more (would be removed)\n")
    return "".join(chunks)


def _unified(old: bytes, new: bytes, label: str, added: bool, removed: bool) -> str:
    try:
        a, b = old.decode().splitlines(keepends=True), new.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"binary file {label} differs\n"
    lines = difflib.unified_diff(a, b, "/dev/null" if added else f"a/{label}", "/dev/null" if removed else f"b/{label}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


@dataclass(frozen=True)
class WriteReport:
    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]


def write_outputs(output_dir: Path, images: list[RenderedImage], prune: bool) -> WriteReport:
    """Write rendered images, touching only changed files; with prune, drop dirs of vanished specs."""
    with OutputWriter(output_dir, [image.name for image in images], prune) as writer:
        for image in images:
            writer.add(image)
        return writer.finish()


@dataclass(frozen=True)
class StagedShard:
    """What one Stager did: paths relative to output/, and the images it left unstaged (wholly
    unchanged, and nothing had changed before them)."""

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    unstaged: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {k: list(getattr(self, k)) for k in ("written", "unchanged", "removed", "unstaged")}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> StagedShard:
        return cls(*(tuple(data[k]) for k in ("written", "unchanged", "removed", "unstaged")))


class Stager:
    """Compares rendered images with output/ and stages them into a staging tree, on a thread of
    its own, as they are added: its work is tens of thousands of mkdir, link and write calls,
    which run beside the render's Python. Unchanged files are hard links to output/ (they keep
    their mtime, so builders' caches stay valid). Nothing is staged while every image compared so
    far is unchanged: a render that changes nothing writes nothing."""

    def __init__(self, output_dir: Path, staging: Path) -> None:
        self._output_dir = output_dir
        self._staging = staging
        self._staging_begun = False
        self._queue: queue.SimpleQueue[RenderedImage | None] = queue.SimpleQueue()
        self._abandoned = threading.Event()
        self._failure: Exception | None = None
        self._unstaged: list[RenderedImage] = []
        self._made = {str(staging)}
        self._contents: dict[tuple[bytes, int], str] = {}  # written once per content, then linked
        self._umask = _umask()
        self._written: list[str] = []
        self._unchanged: list[str] = []
        self._removed: list[str] = []
        self._thread = threading.Thread(target=self._run, name="gen-stager", daemon=True)
        self._thread.start()

    def add(self, image: RenderedImage) -> None:
        self._queue.put(image)

    def abandon(self) -> None:
        """Stop at once (an error or an interrupt): what is queued is dropped."""
        self._abandoned.set()
        self._queue.put(None)
        self._thread.join()

    def finish(self) -> StagedShard:
        """Wait until everything added is compared and staged. Raises what the staging raised."""
        self._queue.put(None)
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        unstaged = tuple(image.name for image in self._unstaged)
        return StagedShard(tuple(self._written), tuple(self._unchanged), tuple(self._removed), unstaged)

    def stage_unchanged(self) -> None:
        """After finish(): stage the images left unstaged too (another shard changed something)."""
        self._stage_unstaged()

    def _run(self) -> None:
        while (image := self._queue.get()) is not None:
            if self._abandoned.is_set() or self._failure is not None:
                continue
            try:
                self._take(image)
            except Exception as exc:  # noqa: BLE001 - raised again by finish(), in the caller's thread
                self._failure = exc

    def _take(self, image: RenderedImage) -> None:
        existing = _existing_files(self._output_dir / image.name)
        unchanged = {f.path for f in image.files if existing.get(f.path) == (f.data, f.mode)}
        for f in image.files:
            (self._unchanged if f.path in unchanged else self._written).append(f"{image.name}/{f.path}")
        gone = sorted(set(existing) - {f.path for f in image.files})
        self._removed += [f"{image.name}/{path}" for path in gone]
        if not self._staging_begun and len(unchanged) == len(image.files) and not gone:
            self._unstaged.append(image)
            return
        self._stage_unstaged()
        self._stage(image, unchanged)

    def _stage_unstaged(self) -> None:
        self._staging_begun = True
        for image in self._unstaged:
            self._stage(image, {f.path for f in image.files})
        self._unstaged.clear()

    def _stage(self, image: RenderedImage, unchanged: set[str]) -> None:
        """Unchanged files linked to output/; changed ones written anew, once for each content,
        the other copies linked to it (images share most of their files, the init scripts, and a
        link is one syscall instead of open, write and close)."""
        for f in image.files:
            key = f"{image.name}/{f.path}"
            new = f"{self._staging}/{key}"
            _make_parents(os.path.dirname(new), self._made)
            if f.path in unchanged:
                os.link(f"{self._output_dir}/{key}", new)
                continue
            first = self._contents.setdefault((f.data, f.mode), new)
            if first != new:
                os.link(first, new)
                continue
            # the staging tree is new: nothing to overwrite (O_EXCL); mode set at creation unless
            # the umask would narrow it.
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, f.mode)
            try:
                _write_all(fd, f.data)
                if f.mode & self._umask:
                    os.fchmod(fd, f.mode)
            finally:
                os.close(fd)


class OutputWriter:
    """Writes rendered images into output/ as they are added, while the render goes on.

    The new output/ is staged beside the old one and swapped in with one atomic rename by
    finish(): an interrupt or an error at any point leaves every image's folder wholly old or
    wholly new, never a mix. Leaving the `with` block without finish() (a spec error found later
    in the render) throws the staging tree away. Another process may stage its share of the
    images into the same tree (`staging`) and hand its StagedShard to merge()."""

    def __init__(self, output_dir: Path, names: list[str], prune: bool) -> None:
        refuse_links(output_dir)
        _remove_leftover_staging(output_dir)
        self._output_dir = output_dir
        self._names = set(names)
        self._prune = prune
        self.staging = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=STAGING_PREFIX))
        self._stager: Stager | None = None
        self._shards: list[StagedShard] = []
        self._finished = False

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._finished and self._stager is not None:  # an error or an interrupt
            self._stager.abandon()
        shutil.rmtree(self.staging, ignore_errors=True)  # the old tree after a swap, else the unused new one

    def add(self, image: RenderedImage) -> None:
        if self._stager is None:  # started at the first image: a process forks before any thread runs
            self._stager = Stager(self._output_dir, self.staging)
        self._stager.add(image)

    def merge(self, shard: StagedShard) -> None:
        """What another process staged into this writer's staging tree."""
        self._shards.append(shard)

    def finish(self) -> WriteReport:
        """Wait for the staging, then swap the new tree in (when anything changed)."""
        try:
            own = self._stager.finish() if self._stager is not None else StagedShard((), (), (), ())
            self._finished = True
            shards = [own, *self._shards]
            removed = [path for shard in shards for path in shard.removed]
            if self._prune:
                removed += [f"{p.name}/" for p in stale_output_dirs(self._output_dir, self._names)]
            report = WriteReport(
                tuple(path for shard in shards for path in shard.written),
                tuple(path for shard in shards for path in shard.unchanged),
                tuple(removed),
            )
            if self._output_dir.is_dir() and not report.written and not report.removed:
                return report
            if self._stager is not None:
                self._stager.stage_unchanged()
            for name in (name for shard in self._shards for name in shard.unstaged):
                _link_files(self._output_dir / name, self.staging / name)  # unchanged: output/ has its files
            self._link_others(set(report.removed))
            _swap_in(self.staging, self._output_dir)
            return report
        except OSError as exc:  # a full disk, output/ on a mount of its own (no hard links across): nothing changed
            raise GenError(f"cannot write {self._output_dir}: {exc}; output/ is as it was") from None

    def _link_others(self, removed: set[str]) -> None:
        """The old tree's entries this render does not make (not gen's, or not rendered this time)."""
        if not self._output_dir.is_dir():
            return
        for entry in sorted(self._output_dir.iterdir()):
            if entry.name not in self._names and f"{entry.name}/" not in removed:
                _link_tree(entry, self.staging / entry.name)


def _link_files(source: Path, target: Path) -> None:
    """The regular files under source (what _existing_files compares), hard-linked under target."""
    made = {str(target.parent)}
    for path in source.rglob("*"):
        if path.is_file() and not path.is_symlink():
            new = target / path.relative_to(source)
            _make_parents(str(new.parent), made)
            os.link(path, new)


def _make_parents(directory: str, made: set[str]) -> None:
    """mkdir directory and any missing parent, top down, each once (no EEXIST/ENOENT retries)."""
    missing = []
    while directory not in made:
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path)
        made.add(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _link_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, copy_function=os.link)
    else:
        os.link(source, target)


def _swap_in(staging: Path, output_dir: Path) -> None:
    """Make staging output_dir; the old tree, if any, is left at staging's path."""
    staging.chmod(_directory_mode(output_dir))
    if not output_dir.is_dir():
        os.rename(staging, output_dir)
        return
    if _exchange(staging, output_dir):
        return
    # A filesystem without RENAME_EXCHANGE: two renames, with the signals that end gen held
    # back between them so an interrupt cannot leave output/ missing.
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        aside = staging.with_name(staging.name + "-old")
        os.rename(output_dir, aside)
        os.rename(staging, output_dir)
        os.rename(aside, staging)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _directory_mode(existing: Path) -> int:
    """The old output/'s permissions, or what mkdir would give (mkdtemp's are 0700)."""
    if existing.is_dir():
        return existing.stat().st_mode & 0o7777
    return 0o777 & ~_umask()


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two directories atomically; False where the C library or
    the filesystem lacks it."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _remove_leftover_staging(output_dir: Path) -> None:
    """Trees an interrupted render left beside output/ (never followed: a link is only unlinked)."""
    for path in output_dir.parent.glob(STAGING_PREFIX + "*"):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
