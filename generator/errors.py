"""Errors every stage raises, carrying where in which file the problem is and how to fix it."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

# Escaped in error lines: controls, lone surrogates, unassigned and private-use, line separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Cn", "Co", "Zl", "Zp"})
# Bidirectional controls: printed raw they reorder the rest of the line (a name can hide its end).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown_raw(c: str) -> bool:
    """Whether c prints as itself: not a control (C0, DEL, C1), line or paragraph separator, lone
    surrogate, unassigned or bidi control. Spaces of other scripts and joiners (U+3000, NBSP, ZWJ)
    are text."""
    return c.isprintable() or (unicodedata.category(c) not in _ESCAPED_CATEGORIES and c not in _BIDI_CONTROLS)


def printable(text: str) -> str:
    """text with every character a terminal would act on written as an escape (\\n, \\x1b,
    \\u202e): such characters come from file names and YAML keys, and raw they would split an
    error line, drive the terminal or reorder what it shows."""
    if text.isprintable():  # bidi controls are format characters: never printable
        return text
    return "".join(c if _shown_raw(c) else c.encode("unicode_escape").decode("ascii") for c in text)


@dataclass(frozen=True)
class Diagnostic:
    """One problem in one input file. line and column are 1-based; 0 means unknown."""

    file: str
    line: int
    column: int
    path: str  # JSON path into the spec, e.g. "$.users[0].uid"; "" when not about a field
    message: str
    hint: str = ""
    severity: str = "error"  # "error" or "warning"

    def parts(self) -> tuple[str, str, str, str]:
        """(where, path, message, hint) as printed: each one line, control characters escaped."""
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return printable(where), printable(self.path), printable(self.message), printable(self.hint)

    def format(self) -> str:
        where, path, message, hint = self.parts()
        head = f"{where}: {path + ': ' if path else ''}{message}"
        return f"{head}\n  hint: {hint}" if hint else head


class GenError(Exception):
    """An error gen reports to the user. exit_code 2 means bad input; 1 a failed operation."""

    exit_code = 1
    # Whether the message's line breaks are its own (a host's problems one a line, a tool's stderr);
    # otherwise a break came from a name or value in it and is escaped with the other controls.
    keeps_lines = False


@dataclass
class SpecError(GenError):
    """One or more problems in the input specs; nothing was changed."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    exit_code = 2

    def __str__(self) -> str:
        return "\n".join(d.format() for d in self.diagnostics)


class SpecFieldError(GenError):
    """A later stage found a spec field unusable (e.g. an s6-overlay version gen has no checksums
    for); render turns it into a Diagnostic at that field's line, exit 2."""

    exit_code = 2

    def __init__(self, path: tuple[str | int, ...], message: str, hint: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.hint = hint


class HostError(GenError):
    """The host lacks what a command needs (a tool, emulation); found before anything started."""

    exit_code = 2
    keeps_lines = True


class UsageError(GenError):
    """Bad command-line input (unknown image name, bad option combination)."""

    exit_code = 2
