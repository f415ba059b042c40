"""Reading one spec file: plain data plus the line and column of every key and value.

ruamel.yaml's round-trip loader keeps positions; we copy them into a flat map keyed by JSON
path tuples so later stages can point at any field without holding ruamel objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from generator.errors import Diagnostic

JsonPath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line, column


@dataclass
class SpecFile:
    """One parsed spec file. `data` is plain dicts/lists/scalars."""

    path: Path
    display: str  # how diagnostics name the file (relative to the project root when inside it)
    data: dict[str, Any]
    value_positions: dict[JsonPath, Position] = field(default_factory=dict)
    key_positions: dict[JsonPath, Position] = field(default_factory=dict)

    def position(self, path: JsonPath, *, key: bool = False) -> Position | None:
        """Where `path` is written (its key when key=True and it is a mapping key)."""
        if key and path in self.key_positions:
            return self.key_positions[path]
        return self.value_positions.get(path)

    def longest_known_prefix(self, path: JsonPath) -> int:
        """How many leading elements of path this file has a position for (0 if none)."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.value_positions:
                return n
        return 0

    def diagnostic(self, path: JsonPath, message: str, hint: str = "", *, key: bool = False,
                   severity: str = "error") -> Diagnostic:
        known = path[: self.longest_known_prefix(path)]
        line, column = self.position(known, key=key and known == path) or (1, 1)
        return Diagnostic(self.display, line, column, json_path_text(path), message, hint, severity)


def json_path_text(path: JsonPath) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _plain(node: Any, path: JsonPath, spec: SpecFile, problems: list[Diagnostic]) -> Any:
    """Copy a ruamel node into plain Python, recording positions on the way."""
    if isinstance(node, CommentedMap):
        result = {}
        for key, value in node.items():
            line, col = node.lc.key(key)
            if not isinstance(key, str):
                problems.append(Diagnostic(spec.display, line + 1, col + 1, json_path_text(path),
                                           f"key {key!r} is not a string", "quote the key"))
                key = str(key)
            child = (*path, key)
            spec.key_positions[child] = (line + 1, col + 1)
            vline, vcol = node.lc.value(key)
            spec.value_positions[child] = (vline + 1, vcol + 1)
            result[key] = _plain(value, child, spec, problems)
        return result
    if isinstance(node, CommentedSeq):
        result_list = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            spec.value_positions[(*path, index)] = (line + 1, col + 1)
            result_list.append(_plain(value, (*path, index), spec, problems))
        return result_list
    for plain_type in (bool, str, int, float):  # drop ruamel's scalar subclasses (bool before int)
        if isinstance(node, plain_type):
            return plain_type(node)
    return node


def read_spec_file(path: Path, display: str) -> tuple[SpecFile | None, list[Diagnostic]]:
    """Parse path. Returns (None, problems) when the file is not a readable YAML mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(display, 0, 0, "", f"cannot read spec: {exc}", "check the file exists and is UTF-8")]
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        hint = ("each key may appear once in a mapping; merge the two entries"
                if "duplicate key" in what else "fix the YAML syntax (indentation, quotes, ':' after keys)")
        return None, [Diagnostic(display, line, column, "", f"invalid YAML: {what}", hint)]
    except YAMLError as exc:
        return None, [Diagnostic(display, 0, 0, "", f"invalid YAML: {exc}", "fix the YAML syntax")]
    if not isinstance(document, CommentedMap):
        kind = "empty" if document is None else type(document).__name__
        return None, [Diagnostic(display, 1, 1, "$", f"a spec must be a mapping of fields, this file is {kind}",
                                 "start from `gen new NAME`, which writes a valid spec")]
    spec = SpecFile(path, display, {})
    spec.value_positions[()] = (1, 1)
    problems: list[Diagnostic] = []
    spec.data = _plain(document, (), spec, problems)
    return spec, problems
