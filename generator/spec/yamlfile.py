"""Reading one spec file: plain data plus the line and column of every key and value.

libyaml's C parser (through PyYAML) gives the events with their positions, ten times faster than
ruamel.yaml's pure-Python round-trip loader; scalars still resolve as ruamel's YAML 1.2 loader
resolves them. Positions go into a flat map keyed by JSON path tuples so later stages can point
at any field without holding parser objects.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from generator.errors import Diagnostic

JsonPath = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based line, column

# A spec is a page of plain YAML. These bound what a hostile one can cost before it is rejected:
# the file's size, nesting, the nodes and the characters it expands to through aliases (a "billion
# laughs" of 500 bytes otherwise grows to gigabytes; one long string aliased 20,000 times, to a
# gigabyte of text once later stages join it), and an integer's size in any base.
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_EXPANDED_CHARS = 4 << 20  # the scalars' characters, each alias counted as all it names
MAX_INT_DIGITS = 30  # written decimal digits; in another base, a value below 10**30
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser where PyYAML was built with it


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

    def diagnostic(
        self, path: JsonPath, message: str, hint: str = "", *, key: bool = False, severity: str = "error"
    ) -> Diagnostic:
        known = path[: self.longest_known_prefix(path)]
        line, column = self.position(known, key=key and known == path) or (1, 1)
        return Diagnostic(self.display, line, column, json_path_text(path), message, hint, severity)


def json_path_text(path: JsonPath) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


# A run of flow openers, as `[[[[`: cut short from the text, before any parser keeps state per
# open level (ruamel's scanner spent about a second on such a run; libyaml stops at 1000 levels).
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


@dataclass
class _Node:
    """One node of the document as parsed: a scalar's constructed value, or a mapping's (key node,
    value node) pairs, or a sequence's nodes; where it starts; how many nodes it expands to."""

    start: Position
    scalar: Any = None
    pairs: list[tuple[_Node, _Node]] | None = None
    items: list[_Node] | None = None
    size: int = 1


@dataclass
class _Open:
    """A mapping or sequence still being read: its anchor, the keys seen so far (a mapping) and
    the key waiting for its value."""

    node: _Node
    anchor: str | None
    keys: set[Any] = field(default_factory=set)
    key: _Node | None = None
    chars_before: int = 0  # the composer's character count when it opened


class _Composer:
    """Builds the node tree from libyaml's event stream (through PyYAML's C parser) in one pass,
    refusing what is not plain, bounded YAML before it is built: tags, merge keys, nesting deeper
    than MAX_DEPTH, more than MAX_NODES nodes or MAX_EXPANDED_CHARS characters through aliases,
    integers of any base past MAX_INT_DIGITS, duplicate keys.
    Scalars resolve and construct as ruamel.yaml's round-trip loader does (YAML 1.2), so a spec
    means what it meant when ruamel parsed it, at a fraction of the cost."""

    def __init__(self) -> None:
        self.anchors: dict[str, tuple[_Node, int]] = {}  # each anchor's node and its characters
        self.open: list[_Open] = []
        self.root: _Node | None = None
        self.documents = 0
        self.chars = 0  # the characters of the scalars read so far, aliases expanded

    def feed(self, event: Any) -> None:
        """Take one event; raises _NotPlain at the first thing a spec may not hold."""
        kind = type(event).__name__
        mark = event.start_mark
        if kind == "DocumentStartEvent":
            self.documents += 1
            if self.documents > 1:
                raise _NotPlain("more than one document in the file: a spec is one mapping (drop the `---`)", mark)
            return
        if kind not in _NODE_EVENTS:
            return
        if getattr(event, "tag", None) and kind != "AliasEvent":
            raise _NotPlain(f"the tag {event.tag} is not allowed: a spec is plain YAML (drop the tag)", mark)
        start = (mark.line + 1, mark.column + 1)
        if kind == "MappingStartEvent" or kind == "SequenceStartEvent":
            mapping = kind == "MappingStartEvent"
            self.open.append(
                _Open(
                    _Node(start, pairs=[] if mapping else None, items=None if mapping else []),
                    event.anchor,
                    chars_before=self.chars,
                )
            )
            if len(self.open) > MAX_DEPTH:
                raise _NotPlain(f"nesting deeper than {MAX_DEPTH} levels: a spec is a page, not a tree this deep", mark)
            return
        if kind == "MappingEndEvent" or kind == "SequenceEndEvent":
            done = self.open.pop()
            node, anchor, chars = done.node, done.anchor, self.chars - done.chars_before
        elif kind == "ScalarEvent":
            node, anchor, chars = _Node(start, _scalar(event, self._at_key())), event.anchor, len(event.value)
            self.chars += chars
        elif event.anchor in self.anchors:
            (node, chars), anchor = self.anchors[event.anchor], None
            self.chars += chars
            if self.chars > MAX_EXPANDED_CHARS:  # only an alias can cross it: the file is smaller
                raise _NotPlain(
                    f"the alias *{event.anchor} takes the document past {MAX_EXPANDED_CHARS} characters "
                    f"(each alias counts all the text it names): alias less text, or write the value once",
                    mark,
                )
        else:
            raise _NotPlain(f"the alias *{event.anchor} names no anchor before it: define &{event.anchor} first", mark)
        if anchor:
            self.anchors[anchor] = (node, chars)
        self._add(node, mark)

    def _at_key(self) -> bool:
        return bool(self.open and self.open[-1].node.pairs is not None and self.open[-1].key is None)

    def _add(self, node: _Node, mark: Any) -> None:
        if not self.open:
            self.root = node
            return
        top = self.open[-1]
        if top.node.items is not None:
            top.node.items.append(node)
        elif top.key is None:
            if node.pairs is None and node.items is None:
                if node.scalar in top.keys:
                    raise _NotPlain(
                        f"found duplicate key {node.scalar!r}: each key may appear once in a mapping; "
                        "merge the two entries",
                        mark,
                        syntax=True,
                    )
                top.keys.add(node.scalar)
            top.key = node
        else:
            top.node.pairs.append((top.key, node))  # type: ignore[union-attr]
            top.key = None
        top.node.size += node.size
        if sum(o.node.size for o in self.open) > MAX_NODES:
            raise _NotPlain(
                f"the document expands to more than {MAX_NODES} nodes (through aliases?): write it out plainly", mark
            )


_NODE_EVENTS = frozenset(
    {"MappingStartEvent", "SequenceStartEvent", "MappingEndEvent", "SequenceEndEvent", "ScalarEvent", "AliasEvent"}
)


class _NotPlain(Exception):
    def __init__(self, message: str, mark: Any, *, syntax: bool = False) -> None:
        super().__init__(message)
        self.message, self.mark, self.syntax = message, mark, syntax


_RESOLVER = VersionedResolver()  # YAML 1.2, as ruamel's round-trip loader
_CONSTRUCTOR = YAML(typ="rt").constructor
_PLAIN_TYPES = (bool, str, int, float)  # ruamel's scalar subclasses become these (bool before int)


def _scalar(event: Any, is_key: bool) -> Any:
    value = event.value
    plain = not event.style
    if is_key and plain and value == "<<":
        raise _NotPlain(
            "merge keys (<<) are not allowed: write the fields out, or share them with extends", event.start_mark
        )
    tag = _RESOLVER.resolve(ScalarNode, value, event.implicit)
    if tag == "tag:yaml.org,2002:str":
        return value
    if tag == "tag:yaml.org,2002:int":
        _check_int_size(value, event.start_mark)
    node = ScalarNode(tag, value, style=event.style or None)
    try:
        constructed = _CONSTRUCTOR.construct_object(node)
    except (ArithmeticError, LookupError, ValueError):  # "-_", "0x_": ruamel resolves an int, then fails
        raise _NotPlain(f"{value!r} reads as a number but is not one: quote it", event.start_mark) from None
    finally:
        _CONSTRUCTOR.constructed_objects.pop(node, None)  # it remembers every node: keep a long run flat
    for plain_type in _PLAIN_TYPES:
        if isinstance(constructed, plain_type):
            return plain_type(constructed)
    return constructed


_INT_BASES = {"0x": (16, "hexadecimal "), "0o": (8, "octal "), "0b": (2, "binary ")}
_INT_LIMIT = 10**MAX_INT_DIGITS


def _check_int_size(value: str, mark: Any) -> None:
    """Refuse an integer too large to be a spec's (a uid, a port) before it is built: Python
    will not even print one of more than 4300 digits. Decimal: at most MAX_INT_DIGITS written
    digits (leading zeros too: int() refuses them past its limit); hexadecimal, octal or binary: a
    value below 10**MAX_INT_DIGITS, as decimal's, however many leading zeros."""
    digits = value.replace("_", "").lstrip("+-")
    base, kind = _INT_BASES.get(digits[:2], (10, ""))
    if base == 10:
        too_big = len(digits) > MAX_INT_DIGITS
    else:
        digits = digits[2:]
        significant = digits.lstrip("0")
        too_big = len(significant) > 4 * MAX_INT_DIGITS or int(significant or "0", base) >= _INT_LIMIT
    if too_big:
        raise _NotPlain(
            f"an integer of {len(digits)} {kind}digits: at most {MAX_INT_DIGITS} decimal digits "
            f"(below 10**{MAX_INT_DIGITS} in any base); quote it if it is text",
            mark,
        )


def _plain(node: _Node, path: JsonPath, spec: SpecFile, problems: list[Diagnostic]) -> Any:
    """Copy a node into plain Python, recording positions on the way (an alias's copy keeps the
    positions of the node it names)."""
    if node.pairs is not None:
        result = {}
        for key_node, value_node in node.pairs:
            key = key_node.scalar
            if not isinstance(key, str) or key_node.pairs is not None or key_node.items is not None:
                shown = (
                    "a mapping" if key_node.pairs is not None else "a list" if key_node.items is not None else repr(key)
                )
                problems.append(
                    Diagnostic(
                        spec.display,
                        *key_node.start,
                        json_path_text(path),
                        f"key {shown} is not a string",
                        "a key must be a string: quote it",
                    )
                )
                continue  # said once: as str(key), "None" or "1", it would be an unknown field too
            child = (*path, key)
            spec.key_positions[child] = key_node.start
            spec.value_positions[child] = value_node.start
            result[key] = _plain(value_node, child, spec, problems)
        return result
    if node.items is not None:
        result_list = []
        for index, item in enumerate(node.items):
            spec.value_positions[(*path, index)] = item.start
            result_list.append(_plain(item, (*path, index), spec, problems))
        return result_list
    return node.scalar


def _compose(text: str) -> _Node | None:
    """The document's node tree (None when empty); _NotPlain or yaml.YAMLError when refused."""
    if (mark := _opener_run(text)) is not None:
        raise _NotPlain(f"nesting deeper than {MAX_DEPTH} levels: a spec is a page, not a tree this deep", mark)
    composer = _Composer()
    for event in yaml.parse(text, Loader=_LOADER):
        composer.feed(event)
    return composer.root


_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _read_bounded(path: Path) -> tuple[bytes, int] | None:
    """At most MAX_SPEC_BYTES + 1 bytes of the file, and its size; None when it is not a regular
    file. Checked before it is opened, opened without blocking and checked again: a FIFO would
    wait for a writer forever, a device (st_size 0) never end, a file swapped in meanwhile is
    still read only up to the limit."""
    if not stat.S_ISREG(path.stat().st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            return None
        return handle.read(MAX_SPEC_BYTES + 1), status.st_size


def read_spec_file(path: Path, display: str) -> tuple[SpecFile | None, list[Diagnostic]]:
    """Parse path. Returns (None, problems) when the file is not a readable YAML mapping."""
    try:
        read = _read_bounded(path)
        if read is None:
            return None, [
                Diagnostic(
                    display,
                    0,
                    0,
                    "",
                    "not a regular file (a FIFO or a device would block or never end)",
                    "a spec is a .yaml file: remove this one or give the file itself",
                )
            ]
        data, size = read
        if len(data) > MAX_SPEC_BYTES:
            return None, [
                Diagnostic(
                    display,
                    0,
                    0,
                    "",
                    f"the spec is {max(size, len(data))} bytes: at most {MAX_SPEC_BYTES}",
                    "a spec is a page of YAML; move data into overlays",
                )
            ]
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(display, 0, 0, "", f"cannot read spec: {exc}", "check the file exists and is UTF-8")]
    try:
        document = _compose(text)
    except _NotPlain as exc:
        what, _, hint = exc.message.partition(": ")
        if exc.syntax:
            what = f"invalid YAML: {what}"
        return None, [Diagnostic(display, exc.mark.line + 1, exc.mark.column + 1, "", what, hint)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        hint = (
            "\\u escapes must name a character (a lone surrogate \\ud800-\\udfff is not one)"
            if "escape" in what
            else "fix the YAML syntax (indentation, quotes, ':' after keys)"
        )
        return None, [Diagnostic(display, line, column, "", f"invalid YAML: {what}", hint)]
    except yaml.YAMLError as exc:
        return None, [Diagnostic(display, 0, 0, "", f"invalid YAML: {exc}", "fix the YAML syntax")]
    except (ValueError, OverflowError, RecursionError) as exc:  # a value ruamel cannot construct
        return None, [Diagnostic(display, 0, 0, "", f"invalid YAML: {str(exc)[:200]}", "write plain values")]
    if document is None or document.pairs is None:
        if document is None or (document.items is None and document.scalar is None):  # no text, or only `---`
            kind = "empty"
        elif document.items is not None:
            kind = "a list"
        else:
            kind = f"a single value, {_TYPE_WORDS.get(type(document.scalar), 'a value')}"
        return None, [
            Diagnostic(
                display,
                1,
                1,
                "$",
                f"a spec must be a mapping of fields, this file is {kind}",
                "start from `gen new NAME`, which writes a valid spec",
            )
        ]
    spec = SpecFile(path, display, {})
    spec.value_positions[()] = (1, 1)
    problems: list[Diagnostic] = []
    spec.data = _plain(document, (), spec, problems)
    return spec, problems
