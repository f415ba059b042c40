"""The render stage: plans to the files of `output/<name>/`, in memory first, then written.

Everything is rendered before anything is written, so a bad spec or template changes nothing.
Writing touches only files whose bytes or mode changed (an unchanged file keeps its mtime, so
builders' caches stay valid), removes files the render no longer produces, and puts each changed
image folder in place whole (see OutputWriter).
"""

from __future__ import annotations

import ctypes
import difflib
import errno
import functools
import json
import os
import queue
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from generator.contract import MANIFEST, STRUCTURE_TEST, Manifest, canonical_json, context_sha256, not_utf8_name
from generator.errors import GenError, UsageError
from generator.files import first_link
from generator.memo import unrecorded
from generator.naming import STAGING_PREFIX
from generator.plan import SPEC_PATH, ConfigFile, Plan
from generator.plan.init_layer import LOGGER_TEMPLATE_DIR
from generator.plan.structure_test import structure_test
from generator.render.templates import TemplateSet

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
            try:
                rel.encode()
            except UnicodeEncodeError:  # named where it is (the context digest would name the copy)
                raise not_utf8_name(str(path)) from None
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


def templates_used(plan: Plan) -> tuple[str, ...]:
    """The template files and directories render_image reads for this plan."""
    parts = ["Dockerfile.j2", "dockerignore.j2", f"family/{plan.family}.j2", "features/", "stages/"]
    if plan.init is not None:
        parts.append(f"{plan.init.template_dir}/")
    if plan.init is not None and plan.init.logger_stage is not None:
        parts.append(f"{LOGGER_TEMPLATE_DIR}/")
    if plan.init is not None:
        parts += sorted({f"{d.skeleton}/" for d in plan.init.rc_definitions if d.skeleton is not None})
    parts += sorted({c.template for c in plan.config_files if c.template})
    return tuple(parts)


def _config_file(config: ConfigFile, templates: TemplateSet) -> RenderedFile:
    text = templates.render(config.template, spec_path=SPEC_PATH) if config.template else config.text
    return RenderedFile(f"gen-config/{config.path}", text.encode(), config.mode)


def render_image(plan: Plan, templates: TemplateSet, manifest: Manifest) -> RenderedImage:
    """Render one plan: Dockerfile, context files, .dockerignore and the manifest."""
    dockerfile = templates.render(f"family/{plan.family}.j2", plan=plan)
    files = [RenderedFile("Dockerfile", _normalize_dockerfile(dockerfile).encode(), 0o644)]
    files += _init_files(plan, templates)
    files += _logger_source(plan, templates)
    files += [_config_file(c, templates) for c in plan.config_files]
    files.append(RenderedFile(f"gen-spec/{SPEC_PATH}", plan.resolved_spec_json.encode(), 0o644))
    for overlay in plan.overlays:
        files += _overlay_files(Path(overlay.host_dir), overlay.context_dir)
    context_dirs = sorted({f.path.split("/", 1)[0] for f in files if "/" in f.path})
    if plan.overlays:
        context_dirs = [d for d in context_dirs if d != "rootfs"] + [o.context_dir for o in plan.overlays]
    files.append(
        RenderedFile(".dockerignore", templates.render("dockerignore.j2", context_dirs=context_dirs).encode(), 0o644)
    )
    manifest = replace(manifest, context_sha256=context_sha256((f.path, f.mode, f.data) for f in files))
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
    _emit_yaml(data, indent, lines)
    return lines


def _emit_yaml(data: object, indent: str, out: list[str]) -> None:
    """Appends data's lines to out (one list for the whole document; strings, the most common
    value, take the shortest path)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if type(value) is str:
                out.append(f"{indent}{_yaml_key(key)}: {_yaml_quote(value)}")
            elif isinstance(value, (dict, list)) and value:
                out.append(f"{indent}{_yaml_key(key)}:")
                _emit_yaml(value, indent + "  " if isinstance(value, dict) else indent, out)
            else:
                out.append(f"{indent}{_yaml_key(key)}: {_yaml_flow(value)}")
    elif isinstance(data, list):
        for item in data:
            if type(item) is str:
                out.append(f"{indent}- {_yaml_quote(item)}")
            elif isinstance(item, (dict, list)) and item:
                first = len(out)
                _emit_yaml(item, indent + "  ", out)
                out[first] = f"{indent}- {out[first].lstrip()}"
            else:
                out.append(f"{indent}- {_yaml_flow(item)}")
    else:
        out.append(f"{indent}{_yaml_scalar(data)}")


# --- comparing with and writing to output/ -------------------------------------------------


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
    """The regular files under an image folder: relative path -> (bytes, permission bits)."""
    found: dict[str, tuple[bytes, int]] = {}
    _read_tree(str(image_dir), "", found)
    return found


def _read_tree(top: str, prefix: str, found: dict[str, tuple[bytes, int]]) -> None:
    """Walked by the entries' own types (no stat per entry), each file read with one open and
    one fstat; links are never followed (refuse_links ran first)."""
    try:
        entries = list(os.scandir(top))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _read_tree(entry.path, f"{prefix}{entry.name}/", found)
        elif entry.is_file(follow_symlinks=False):
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                size, mode = (st := os.fstat(fd)).st_size, st.st_mode & 0o777
                found[prefix + entry.name] = (_read_fd(fd, size), mode)
            finally:
                os.close(fd)


def _read_fd(fd: int, size: int) -> bytes:
    chunks = [os.read(fd, max(size, 1))]
    while chunks[-1]:  # the file may have grown since fstat
        chunks.append(os.read(fd, 1 << 16))
    return b"".join(chunks)


def stale_output_dirs(output_dir: Path, keep: set[str]) -> list[Path]:
    """gen-made image dirs in output/ whose spec is gone."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and p.name not in keep and (p / MANIFEST).is_file())


def image_diff(output_dir: Path, image: RenderedImage) -> str:
    """Unified diff from one image folder in output/ to what a render writes there; "" when up
    to date (refuse_links has run on output/)."""
    chunks: list[str] = []
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
    return "".join(chunks)


def stale_diff(output_dir: Path, names: set[str]) -> str:
    return "".join(
        f"output/{stale.name}/: no spec renders it any more (would be removed)\n"
        for stale in stale_output_dirs(output_dir, names)
    )


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
    """What one Stager did: paths relative to output/, and the images it staged (those with any
    change: an unchanged image is never staged)."""

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    staged: tuple[str, ...]

    def to_json(self) -> dict[str, list[str]]:
        return {k: list(getattr(self, k)) for k in ("written", "unchanged", "removed", "staged")}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> StagedShard:
        return cls(*(tuple(data[k]) for k in ("written", "unchanged", "removed", "staged")))


class Stager:
    """Compares rendered images with output/ and stages each changed one, whole, into a staging
    tree, on a thread of its own, as they are added: its work is mkdir, link and write calls,
    which run beside the render's Python. Unchanged files of a changed image are hard links to
    output/ (they keep their mtime, so builders' caches stay valid); an image with no change is
    not staged at all, so a render that changes one spec of 1000 writes one folder."""

    def __init__(self, output_dir: Path, staging: Path) -> None:
        self._output_dir = output_dir
        self._staging = staging
        self._queue: queue.SimpleQueue[RenderedImage | None] = queue.SimpleQueue()
        self._abandoned = threading.Event()
        self._failure: Exception | None = None
        self._made = {str(staging)}
        self._contents: dict[tuple[bytes, int], str] = {}  # written once per content, then linked
        self._umask = _umask()
        self._written: list[str] = []
        self._unchanged: list[str] = []
        self._removed: list[str] = []
        self._staged: list[str] = []
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
        return StagedShard(tuple(self._written), tuple(self._unchanged), tuple(self._removed), tuple(self._staged))

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
        if len(unchanged) < len(image.files) or gone:
            self._stage(image, unchanged)
            self._staged.append(image.name)

    def _stage(self, image: RenderedImage, unchanged: set[str]) -> None:
        """Unchanged files linked to output/; changed ones written anew, once for each content,
        the other copies linked to it (images share most of their files, the init scripts, and a
        link is one syscall instead of open, write and close)."""
        _make_parents(f"{self._staging}/{image.name}", self._made)  # an image may have no file
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

    Each changed image is staged whole beside output/ and put in place by finish(): the first
    render renames the staging tree to output/; later ones exchange each changed image folder
    with its staged copy (renameat2 RENAME_EXCHANGE, one atomic call per folder), all of them
    with the signals that end gen held back, and undone in reverse if one fails. So an
    interrupt or an error at any point leaves output/ wholly old or wholly new, never a mix, and
    an image folder is never half replaced even by a crash. Leaving the `with` block without
    finish() (a spec error found later in the render) throws the staging tree away. Another
    process may stage its share of the images into the same tree (`staging`) and hand its
    StagedShard to merge()."""

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
        with unrecorded():
            shutil.rmtree(self.staging, ignore_errors=True)  # the replaced folders, or the unused new ones

    def add(self, image: RenderedImage) -> None:
        if self._stager is None:  # started at the first image: a process forks before any thread runs
            self._stager = Stager(self._output_dir, self.staging)
        self._stager.add(image)

    def merge(self, shard: StagedShard) -> None:
        """What another process staged into this writer's staging tree."""
        self._shards.append(shard)

    def finish(self) -> WriteReport:
        """Wait for the staging, then put the changed folders in place."""
        try:
            own = self._stager.finish() if self._stager is not None else StagedShard((), (), (), ())
            self._finished = True
            shards = [own, *self._shards]
            stale = stale_output_dirs(self._output_dir, self._names) if self._prune else []
            report = WriteReport(
                tuple(path for shard in shards for path in shard.written),
                tuple(path for shard in shards for path in shard.unchanged),
                tuple([path for shard in shards for path in shard.removed] + [f"{p.name}/" for p in stale]),
            )
            if not self._output_dir.is_dir():
                self.staging.chmod(0o777 & ~_umask())  # what mkdir would give (mkdtemp's are 0700)
                os.rename(self.staging, self._output_dir)
            else:
                staged = sorted(name for shard in shards for name in shard.staged)
                _put_in_place(self.staging, self._output_dir, staged, [p.name for p in stale])
            return report
        except OSError as exc:  # a full disk, output/ on a mount of its own (no hard links across): nothing changed
            raise GenError(f"cannot write {self._output_dir}: {exc}; output/ is as it was") from None


def _put_in_place(staging: Path, output_dir: Path, staged: list[str], stale: list[str]) -> None:
    """Exchange each staged folder with output/'s (or move it in), and move stale folders out to
    staging, with SIGINT, SIGTERM and SIGHUP held back until all are done; on an error, what
    was done is undone in reverse and the error raised."""
    moves = [(staging / name, output_dir / name) for name in staged]
    moves += [(output_dir / name, staging / name) for name in stale]
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    done: list[tuple[Path, Path]] = []
    try:
        for source, target in moves:
            _replace(source, target)
            done.append((source, target))
    except OSError:
        for source, target in reversed(done):
            _replace(target, source)
        raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _replace(source: Path, target: Path) -> None:
    """Put source at target; whatever was at target is left at source's path."""
    if not os.path.lexists(target):
        os.rename(source, target)
    elif not _exchange(source, target):  # a filesystem without RENAME_EXCHANGE: three renames
        aside = source.with_name(f".{source.name}.old")  # no image is named with a leading dot
        os.rename(target, aside)
        os.rename(source, target)
        os.rename(aside, source)


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
    for path in list(output_dir.parent.glob(STAGING_PREFIX + "*")):  # listed once: one renamed aside is not met again
        try:
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                with unrecorded():
                    _remove_tree(path)
        except OSError as exc:
            raise GenError(f"cannot remove {path}, left there by an interrupted gen: {exc}") from None


LEFTOVER_REMOVAL_SECONDS = 5.0
_REMOVING = ".removing"


def _remove_tree(path: Path) -> None:
    """rmtree of a tree a process may still be writing into (a child of a gen killed before it
    could end its children). Renamed aside first: the writer names its files by the old path, so
    its next write fails and it stops; the new name keeps the prefix, so a later render finishes
    the job if this one is interrupted. A file written meanwhile makes rmtree fail (ENOTEMPTY):
    tried again, for a bounded time."""
    aside = path if path.name.endswith(_REMOVING) else path.with_name(path.name + _REMOVING)
    try:
        os.rename(path, aside)  # a no-op for a tree a removal that was itself interrupted renamed
    except FileNotFoundError:  # another gen removed it meanwhile
        return
    deadline = time.monotonic() + LEFTOVER_REMOVAL_SECONDS
    while True:
        try:
            shutil.rmtree(aside)
            return
        except OSError:
            if not os.path.lexists(aside):
                return
            if time.monotonic() > deadline:
                raise
        time.sleep(0.01)
