"""Writing one file so that readers see the old text or the new, never a part."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write text to path through a temporary file beside it and one rename, only when the text
    differs (so git and mtimes see no churn). True when written."""
    try:
        if path.read_text(encoding="utf-8") == text:
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
    from generator.errors import UsageError

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
    thousands)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    for entry in entries:
        if entry.is_symlink():
            return Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and (found := first_link(Path(entry.path))) is not None:
            return found
    return None


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
