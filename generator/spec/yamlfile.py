"""Reading one spec file: plain data plus the line and column of every key and value.

ruamel.yaml's round-trip loader keeps positions; we copy them into a flat map keyed by JSON
path tuples so later stages can point at any field without holding ruamel objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from generator.errors import Diagnostic

JsonPath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line, column

# A spec is a page of plain YAML. These bound what a hostile one can cost before it is rejected:
# the file's size, nesting, the nodes it expands to through aliases (a "billion laughs" of 500
# bytes otherwise grows to gigabytes), and the digits of an integer.
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_INT_DIGITS = 30


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
            vline, vcol = node.lc.value(key)
            if not isinstance(key, str):
                problems.append(Diagnostic(spec.display, line + 1, col + 1, json_path_text(path),
                                           f"key {key!r} is not a string", "quote the key"))
                key = str(key)
            child = (*path, key)
            spec.key_positions[child] = (line + 1, col + 1)
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


# A run of flow openers, as `[[[[`: ruamel's scanner keeps a possible simple key per open flow
# level and checks them all at every token, so such a run costs about a second before the event
# pass below can stop it at MAX_DEPTH. Cut it short from the text.
_OPENER_RUN = re.compile(r"[\[{][\[{\s]*")  # maximal runs: one linear pass, no backtracking


@dataclass(frozen=True)
class _TextMark:
    line: int  # 0-based, as ruamel's marks
    column: int


def _opener_run(text: str) -> _TextMark | None:
    for run in _OPENER_RUN.finditer(text):
        if run.group().count("[") + run.group().count("{") > MAX_DEPTH:
            line = text.count("\n", 0, run.start())
            return _TextMark(line, run.start() - (text.rfind("\n", 0, run.start()) + 1))
    return None


class _Frame:
    """An open mapping or sequence while scanning events: its anchor, the nodes it expands to, and
    (for a mapping) whether the next scalar is a key."""

    def __init__(self, mapping: bool, anchor: str | None) -> None:
        self.mapping, self.anchor, self.nodes, self.at_key = mapping, anchor, 1, mapping


def _plain_yaml_problem(text: str) -> tuple[str, Any] | None:
    """The first thing in text that is not plain, bounded YAML, as (message and hint, mark), from
    the event stream alone: nothing is constructed, so nothing can blow up first."""
    if (mark := _opener_run(text)) is not None:
        return f"nesting deeper than {MAX_DEPTH} levels: a spec is a page, not a tree this deep", mark
    anchors: dict[str, int] = {}
    stack: list[_Frame] = []
    total = 0
    for event in YAML(typ="rt").parse(text):
        kind = type(event).__name__
        mark = event.start_mark
        if getattr(event, "tag", None) and kind != "AliasEvent":
            return f"the tag {event.tag} is not allowed: a spec is plain YAML (drop the tag)", mark
        is_key = bool(stack and stack[-1].at_key)
        nodes = 0
        if kind in ("MappingStartEvent", "SequenceStartEvent"):
            stack.append(_Frame(kind == "MappingStartEvent", event.anchor))
            if len(stack) > MAX_DEPTH:
                return f"nesting deeper than {MAX_DEPTH} levels: a spec is a page, not a tree this deep", mark
            continue
        if kind in ("MappingEndEvent", "SequenceEndEvent"):
            frame = stack.pop()
            if frame.anchor:
                anchors[frame.anchor] = frame.nodes
            nodes = frame.nodes
        elif kind == "ScalarEvent":
            value = event.value
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds a lone surrogate (\\ud800-\\udfff), which is not text: remove it", mark
            if is_key and value == "<<" and event.style is None:
                return "merge keys (<<) are not allowed: write the fields out, or share them with extends", mark
            digits = value.lstrip("+-").replace("_", "")
            if event.style is None and digits.isdigit() and len(digits) > MAX_INT_DIGITS:
                return f"an integer of {len(digits)} digits: at most {MAX_INT_DIGITS}", mark
            if event.anchor:
                anchors[event.anchor] = 1
            nodes = 1
        elif kind == "AliasEvent":
            nodes = anchors.get(event.anchor, 1)
        else:
            continue
        if stack:
            stack[-1].nodes += nodes
            if stack[-1].mapping:
                stack[-1].at_key = not stack[-1].at_key
        total = max(total, sum(f.nodes for f in stack) + nodes)
        if total > MAX_NODES:
            return f"the document expands to more than {MAX_NODES} nodes (through aliases?): write it out plainly", mark
    return None


def read_spec_file(path: Path, display: str) -> tuple[SpecFile | None, list[Diagnostic]]:
    """Parse path. Returns (None, problems) when the file is not a readable YAML mapping."""
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            return None, [Diagnostic(display, 0, 0, "", f"the spec is {path.stat().st_size} bytes: at most "
                                     f"{MAX_SPEC_BYTES}", "a spec is a page of YAML; move data into overlays")]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(display, 0, 0, "", f"cannot read spec: {exc}", "check the file exists and is UTF-8")]
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        problem = _plain_yaml_problem(text)
        if problem is not None:
            message, mark = problem
            what, _, hint = message.partition(": ")
            return None, [Diagnostic(display, mark.line + 1, mark.column + 1, "", what, hint)]
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
    except (ValueError, OverflowError, RecursionError) as exc:  # a value ruamel cannot construct
        return None, [Diagnostic(display, 0, 0, "", f"invalid YAML: {str(exc)[:200]}", "write plain values")]
    if not isinstance(document, CommentedMap):
        kind = "empty" if document is None else type(document).__name__
        return None, [Diagnostic(display, 1, 1, "$", f"a spec must be a mapping of fields, this file is {kind}",
                                 "start from `gen new NAME`, which writes a valid spec")]
    spec = SpecFile(path, display, {})
    spec.value_positions[()] = (1, 1)
    problems: list[Diagnostic] = []
    spec.data = _plain(document, (), spec, problems)
    return spec, problems
