"""What a validate or render read and wrote, so that a run with nothing changed is answered
without parsing a spec again (on 1000 specs: well under a second instead of several).

While a run loads and renders, every file Python opens for reading and every directory it lists
is recorded by a sys audit hook: no code has to declare its inputs, so none can be forgotten.
The record keeps each file's sha256 (or that it was absent), each listed directory's entries
(name, kind, executable bit, link target), and the entries of every directory above them up to
the project root, so that a file created where gen only probed with stat (an s6-overlay sums
table, a parent spec) changes the record too. A later run repeats the recorded answer only when
gen itself is byte for byte the same, every input hashes the same, and, for render, output/ is
exactly as the last render left it (every entry's kind, size, mtime, inode and mode).

The record lives in `.gen/render-memo.json` (never read or written through a link); losing it
only costs one full run.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from generator.errors import Diagnostic
from generator.files import write_text_atomic
from generator.forked import deal_out, interleave
from generator.naming import STAGING_PREFIX

MEMO_VERSION = 1
MEMO_FILE = Path(".gen") / "render-memo.json"
KEY_FILE = "render-memo.key"
# output/ is recorded at least this long after its newest entry was written, so any later change
# to a file gets a later mtime (filesystem timestamps tick in jiffies: 1-10 ms).
_CLOCK_TICK_NS = 20_000_000


@dataclass(frozen=True)
class Outcome:
    """What the run reported: the images in order and the warnings it printed."""

    images: tuple[str, ...]
    warnings: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class Record:
    inputs_sha256: str  # over the files and directory listings below, as they were read
    files: tuple[str, ...]  # absolute paths opened for reading
    dirs: tuple[str, ...]  # absolute paths listed, or above what was read
    output_sha256: str | None  # output/'s entries after the render; None for validate
    outcome: Outcome

    def to_json(self) -> dict[str, object]:
        return asdict(self)  # the warnings too: Diagnostic is a dataclass

    @classmethod
    def from_json(cls, data: dict) -> Record:
        outcome = data["outcome"]
        return cls(
            inputs_sha256=str(data["inputs_sha256"]),
            files=tuple(map(str, data["files"])),
            dirs=tuple(map(str, data["dirs"])),
            output_sha256=data["output_sha256"],
            outcome=Outcome(tuple(outcome["images"]), tuple(Diagnostic(**d) for d in outcome["warnings"])),
        )


# --- recording what a run reads ----------------------------------------------------------------

_recording: list[tuple[set[str], set[str]]] = []  # (files, dirs) of the runs being recorded
_hook_installed = False


def _audit(event: str, args: tuple) -> None:
    if not _recording or event not in ("open", "os.listdir", "os.scandir"):
        return
    try:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & (os.O_WRONLY | os.O_RDWR)
            if not writing and isinstance(path, (str, bytes, os.PathLike)):
                _recording[-1][0].add(os.path.abspath(os.fsdecode(path)))
        elif args and isinstance(args[0], (str, bytes, os.PathLike)):
            _recording[-1][1].add(os.path.abspath(os.fsdecode(args[0])))
    except Exception:  # noqa: BLE001 - a hook that raised would fail the open it watches
        _recording[-1][0].add("\0unrecordable")  # not a path in the project: the run is not recorded


@contextmanager
def recording() -> Iterator[tuple[set[str], set[str]]]:
    """(files opened for reading, directories listed) while the block runs, as absolute paths."""
    global _hook_installed
    if not _hook_installed:  # an audit hook cannot be removed: one for the process, idle between runs
        sys.addaudithook(_audit)
        _hook_installed = True
    _recording.append((set(), set()))
    try:
        yield _recording[-1]
    finally:
        _recording.pop()


@contextmanager
def unrecorded() -> Iterator[None]:
    """A block whose reads are not inputs: gen deleting its own staging tree (shutil.rmtree's
    safe walk opens each folder by a name relative to its parent, which would read as a file
    outside the project and leave the run unremembered)."""
    _recording.append((set(), set()))  # a frame of its own, dropped after
    try:
        yield
    finally:
        _recording.pop()


def note_reads(files: Iterable[str], dirs: Iterable[str]) -> None:
    """Reads another process made for this run (a forked child), added to the run being recorded."""
    if _recording:
        _recording[-1][0].update(files)
        _recording[-1][1].update(dirs)


# --- hashing inputs and outputs ----------------------------------------------------------------


def _gen_roots() -> tuple[Path, ...]:
    """gen's own files: the package and its bundled templates (package data, which an editable
    install keeps in the checkout's templates/)."""
    return Path(__file__).resolve().parent, Path(str(resources.files("generator.templates"))).resolve()


@dataclass(frozen=True)
class _Scope:
    """Which reads are the project's inputs. gen's own files are in the gen stamp; Python's
    libraries (a virtualenv may sit in the project) are not inputs; output/ is compared as a
    whole; .gen/ holds this record. Anything else outside the project makes a run unrecordable."""

    root: str
    skipped: tuple[str, ...]

    @classmethod
    def of(cls, project: Path) -> _Scope:
        root = str(project.absolute())
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
        # a Python prefix that holds the project (/usr for /usr/src/p) would hide the project
        python = {p for p in prefixes if not os.path.join(root, "").startswith(os.path.join(p, ""))}
        skipped = {*map(str, _gen_roots()), *python, os.path.join(root, "output"), os.path.join(root, ".gen")}
        return cls(root, tuple(os.path.join(p, "") for p in skipped))

    def skips(self, path: str) -> bool:
        return os.path.join(path, "").startswith(self.skipped) or os.path.basename(path).startswith(STAGING_PREFIX)

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(os.path.join(self.root, ""))


def _entry(path: str) -> str:
    """One directory entry as render sees it: kind, executable bit, link target."""
    try:
        st = os.lstat(path)
    except OSError:
        return "absent"
    if stat.S_ISLNK(st.st_mode):
        return "link:" + os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "exec" if st.st_mode & 0o100 else "file"
    return "other"


def _listing(path: str, scope: _Scope) -> str:
    try:
        names = sorted(os.listdir(path)) if os.path.isdir(path) and not os.path.islink(path) else None
    except OSError:
        names = None
    if names is None:
        return _entry(path)
    entries = [(name, os.path.join(path, name)) for name in names]
    return "\n".join(f"{name}\0{_entry(full)}" for name, full in entries if not scope.skips(full))


def _content(path: str) -> str:
    try:
        if os.path.islink(path) or not os.path.isfile(path):
            return _entry(path)
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return "unreadable"


# Names the memo hashes are encoded with surrogateescape: a file name that is not UTF-8 (Python
# holds its bytes as lone surrogates) hashes as those bytes instead of failing.
def _inputs_sha256(files: tuple[str, ...], dirs: tuple[str, ...], scope: _Scope) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(f"file\0{path}\0{_content(path)}\n".encode(errors="surrogateescape"))
    for path in dirs:
        h.update(f"dir\0{path}\0{_listing(path, scope)}\n".encode(errors="surrogateescape"))
    return h.hexdigest()


def _with_ancestors(paths: set[str], scope: _Scope) -> set[str]:
    """Every directory above a recorded path up to the project root: its listing changes when
    something is created where gen only probed with stat, or a directory becomes a link."""
    found = {scope.root}
    for path in paths:
        parent = os.path.dirname(path)
        while scope.inside(parent) and parent not in found:
            found.add(parent)
            parent = os.path.dirname(parent)
    return found


def gen_sha256() -> str:
    """gen itself: its package files and bundled templates, by content (an edited checkout counts)."""
    h = hashlib.sha256()
    for root in _gen_roots():
        for top, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                path = os.path.join(top, name)
                h.update(f"{path}\0{_content(path)}\n".encode(errors="surrogateescape"))
    return h.hexdigest()


# Below this many image folders one process walks output/: a fork costs more than it saves.
PARALLEL_WALK_MIN = 64


def _output_state(output_dir: Path) -> tuple[str, int]:
    """(digest, newest mtime) of every entry under output/ by kind, size, mtime, inode and mode:
    any edit, addition or removal changes the digest (content is not read: output/ can hold tens
    of thousands of files). The image folders are walked on every core, each by one process."""
    try:
        entries = sorted(os.scandir(output_dir), key=lambda e: e.name)
    except OSError as exc:
        return hashlib.sha256(f"{output_dir}\0{exc.errno}\n".encode()).hexdigest(), 0
    folders = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    below = dict(zip(folders, interleave(deal_out(folders, PARALLEL_WALK_MIN, _tree_states)), strict=True))
    h = hashlib.sha256()
    newest = 0
    for entry in entries:
        st = entry.stat(follow_symlinks=False)
        digest, newest_below = below.get(entry.path, ("", 0))
        h.update(
            f"{entry.name}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{digest}\n".encode(
                errors="surrogateescape"
            )
        )
        newest = max(newest, st.st_mtime_ns, newest_below)
    return h.hexdigest(), newest


def _tree_states(tops: Sequence[str]) -> list[tuple[str, int]]:
    return [_tree_state(top) for top in tops]


def _tree_state(top: str) -> tuple[str, int]:
    """(digest, newest mtime) of the entries below top, by their paths relative to it."""
    lines: list[str] = []
    newest = 0
    pending = [(top, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            lines.append(f"{prefix}\0{exc.errno}\n")
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:  # a path past 4096 bytes: recorded as such; render refuses the tree
                lines.append(f"{prefix}{entry.name}\0{exc.errno}\n")
                continue
            lines.append(f"{prefix}{entry.name}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n")
            newest = max(newest, st.st_mtime_ns)
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, f"{prefix}{entry.name}/"))
    return hashlib.sha256("".join(lines).encode(errors="surrogateescape")).hexdigest(), newest


def output_sha256(output_dir: Path) -> str:
    """output/'s state to record, taken only once the clock has moved past its newest entry's
    mtime, so any later write to a file gives it another mtime. The run has usually just written,
    so the tick is waited first: one walk of output/, not a walk, a wait and a second walk."""
    time.sleep(_CLOCK_TICK_NS / 1e9)
    started = time.time_ns()
    digest, newest = _output_state(output_dir)
    if newest > started - _CLOCK_TICK_NS:  # written by someone else meanwhile
        time.sleep(_CLOCK_TICK_NS / 1e9)
        digest, _ = _output_state(output_dir)
    return digest


# --- the memo file -----------------------------------------------------------------------------


class Memo:
    """The records of one project, by command key.

    The stamp ties records to gen's own files and to a random key file gen made in .gen/ (its
    bytes, inode and ctime): a memo file committed to a repository, or copied from another
    machine, never matches, so no one can hand gen a forged "valid"."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.path = project / MEMO_FILE
        self.scope = _Scope.of(project)
        self.records: dict[str, Record] = {}
        self.gen = gen_sha256()  # once per run: both the lookup and the save are stamped with it
        if (stamp := self._stamp(create=False)) is not None:
            self.records = self._read(stamp)

    def _stamp(self, create: bool) -> str | None:
        """gen's files and the key file's identity; None when .gen/ cannot be used safely (or,
        unless create, has no key yet: a run that fails writes nothing)."""
        key = self.path.parent / KEY_FILE
        try:  # OSError: a read-only checkout, or a project path too long to look up: every run is a full one
            if any(p.is_symlink() for p in (self.path.parent, self.path, key)):
                return None  # never through a link: a repository may commit .gen or a file in it as one
            if not key.exists():
                if not create:
                    return None
                self.path.parent.mkdir(exist_ok=True)
                ignore = self.path.parent / ".gitignore"
                if not ignore.exists() and not ignore.is_symlink():  # gen's state, never committed
                    ignore.write_text("# gen's own state (render memo, build logs): never commit it\n*\n")
                with open(key, "xb") as handle:
                    handle.write(os.urandom(32))
            st = os.lstat(key)
            secret = key.read_bytes()
        except OSError:
            return None
        identity = f"{st.st_dev}:{st.st_ino}:{st.st_ctime_ns}:{secret.hex()}"
        return hashlib.sha256(f"{MEMO_VERSION}\0{self.gen}\0{identity}".encode()).hexdigest()

    def _read(self, stamp: str) -> dict[str, Record]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("stamp") != stamp:
                return {}
            return {key: Record.from_json(r) for key, r in data["records"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return {}  # absent, damaged or foreign: one full run rewrites it

    def lookup(self, key: str, output_dir: Path | None = None) -> Outcome | None:
        """The recorded outcome when nothing it depends on changed, else None."""
        record = self.records.get(key)
        if record is None or not all(self.scope.inside(p) for p in record.files + record.dirs):
            return None
        if _inputs_sha256(record.files, record.dirs, self.scope) != record.inputs_sha256:
            return None
        if output_dir is not None and record.output_sha256 != _output_state(output_dir)[0]:
            return None
        return record.outcome

    def store(self, key: str, reads: tuple[set[str], set[str]], outcome: Outcome, output_dir: Path | None) -> None:
        """Record a run that succeeded; a run that read outside the project is not recorded."""
        files = {p for p in reads[0] if not self.scope.skips(p)}
        listed = {p for p in reads[1] if not self.scope.skips(p)}
        if not all(self.scope.inside(p) for p in files | listed):
            self.records.pop(key, None)
            return
        dirs = listed | {p for p in _with_ancestors(files | listed, self.scope) if not self.scope.skips(p)}
        files_t, dirs_t = tuple(sorted(files)), tuple(sorted(dirs))
        output = output_sha256(output_dir) if output_dir is not None else None
        self.records[key] = Record(_inputs_sha256(files_t, dirs_t, self.scope), files_t, dirs_t, output, outcome)

    def save(self) -> None:
        if (stamp := self._stamp(create=True)) is None:
            return
        records = {key: r.to_json() for key, r in sorted(self.records.items())}
        try:
            write_text_atomic(self.path, json.dumps({"stamp": stamp, "records": records}, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only checkout: every run is a full one
