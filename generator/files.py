"""Writing one file so that readers see the old text or the new, never a part."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import NoReturn

from generator.errors import Diagnostic, SpecError, UsageError, printable

# How to fix a path the file system refused to look up, by errno.
_FIXES = {
    errno.ENAMETOOLONG: "use shorter names (at most 255 bytes a name, 4096 a whole path)",
    errno.ELOOP: "its symlinks form a loop: fix or remove them",
    errno.EACCES: "check the permissions of the directories on the way",
}


def _shown(path: Path | str) -> str:
    """A path as an error names it: a name of hundreds of characters is cut, not printed whole."""
    text = printable(str(path))
    return text if len(text) <= 100 else f"{text[:40]}...{text[-40:]} ({len(text)} characters)"


def given_path_status(path: Path, what: str) -> os.stat_result | None:
    """The status of a path the user gave (links followed), or None when nothing is there. A
    path the file system cannot even look up (a name too long, a loop of links, no permission)
    raises UsageError saying what and how to fix it, where Path.exists() would raise a traceback."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        fix = _FIXES.get(exc.errno or 0, "check the path")
        raise UsageError(f"{what} {_shown(path)}: {exc.strerror}; {fix}") from None


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write text to path through a temporary file beside it and one rename, only when the text
    differs (so git and mtimes see no churn). True when written. A symlink there is replaced, never
    read or written through: it may lead out of the project."""
    try:
        if not path.is_symlink() and path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def refuse_links_below(root: Path, path: Path) -> None:
    """Raise UsageError when a directory between root and path (path included) is a symlink: a
    repository may commit one that leads out of the project. Paths outside root are the user's
    own choice on the command line and are not checked."""
    try:
        relative = path.absolute().relative_to(root.absolute())
    except ValueError:
        return
    current = root.absolute()
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise UsageError(
                f"{current} is a symlink (to {os.readlink(current)}): gen writes only inside the project; "
                "remove the link or give a directory of your own"
            )


def first_link(directory: Path) -> Path | None:
    """The first symlink in a directory tree (by sorted path), walked without following any; or
    None. The directory entries' own types answer: no stat per entry (output/ holds tens of
    thousands). An explicit stack, not recursion: a tree may be deeper than Python recurses.

    Every overlay and output/ folder is walked here before gen copies or compares it, so a tree
    gen cannot handle is refused here: one the file system cannot walk (a path past 4096 bytes)
    or deeper than MAX_TREE_DEPTH. SpecError, as bad input anywhere in the project: exit 2, also
    when a forked render found it."""
    pending: list[tuple[os.DirEntry[str] | str, int]] = [(str(directory), 0)]  # to see, the next on top
    while pending:
        entry, depth = pending.pop()
        if not isinstance(entry, str):
            if entry.is_symlink():
                return Path(entry.path)
            if not entry.is_dir(follow_symlinks=False):
                continue
        top = entry if isinstance(entry, str) else entry.path
        if depth > MAX_TREE_DEPTH:
            _refuse_tree(top, f"more than {MAX_TREE_DEPTH} directories deep", "flatten the tree")
        try:
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            _refuse_tree(top, exc.strerror or str(exc), _FIXES.get(exc.errno or 0, "check the directory"))
        pending += ((e, depth + 1) for e in reversed(entries))  # a folder's tree before its next sibling
    return None


# Deeper trees are refused: no image needs one, and gen's other walks of overlays and output/
# go down one level per Python call (Python stops near 1000).
MAX_TREE_DEPTH = 256


def _refuse_tree(path: str, what: str, fix: str) -> NoReturn:
    raise SpecError([Diagnostic(_shown(path), 0, 0, "", what, fix)])


def is_dir(path: Path) -> bool:
    """Path.is_dir, but False where the name cannot be looked up at all (a component longer than
    the file system allows raises ENAMETOOLONG): a spec's bad path is an error line, never a traceback."""
    try:
        return path.is_dir()
    except OSError:
        return False


def is_file(path: Path) -> bool:
    """Path.is_file, with is_dir's guard."""
    try:
        return path.is_file()
    except OSError:
        return False
