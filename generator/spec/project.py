"""Loading a set of spec files into a Project: parsed, validated, linked by `extends`, resolved."""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import Diagnostic, SpecError
from generator.files import is_file
from generator.forked import deal_out, interleave
from generator.memo import note_reads, recording
from generator.spec.checks import check_spec
from generator.spec.merge import merge, own_origins, with_defaults
from generator.spec.resolved import ResolvedSpec
from generator.spec.schema_check import check_against_schema
from generator.spec.yamlfile import SpecFile, read_spec_file

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass
class Project:
    """Resolved specs by name, in dependency order (every parent before its children)."""

    root: Path
    specs: dict[str, ResolvedSpec]
    warnings: list[Diagnostic] = field(default_factory=list)

    def order(self) -> list[str]:
        return list(self.specs)

    def children(self, name: str) -> list[str]:
        return [n for n, s in self.specs.items() if s.parent == name]

    def ancestors(self, name: str) -> list[str]:
        """Parents of name, nearest last (root first)."""
        return [f.data["name"] for f in self.specs[name].chain[:-1]]

    def descendants(self, name: str) -> list[str]:
        return [n for n, s in self.specs.items() if name in self.ancestors(n)]


def _display(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _spec_paths(paths: list[Path]) -> list[Path]:
    """Files given, plus the spec files directly inside directories given (not their overlays)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
        else:
            found.append(path)
    unique: dict[Path, Path] = {}  # resolved -> as given, first wins: a link keeps its own name
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def outside_project(path: Path, root: Path, real_root: Path | None = None) -> str | None:
    """Why path may not be read or written, when it (through any symlink) leads out of the project
    at root: a repository may commit a link to /etc/shadow or to the user's home. None if inside."""
    target, real_root = path.resolve(), real_root or root.resolve()
    if target.is_relative_to(real_root):
        return None
    if target != path.absolute():
        return f"{path} leads to {target}, outside the project {real_root}"
    return f"{path} is outside the project {real_root}"


# Below this many files one process reads them all: a fork costs more than it saves.
PARALLEL_READ_MIN = 64


def _read_all(paths: list[Path], root: Path) -> tuple[dict[str, SpecFile], list[Diagnostic]]:
    """Parse and schema-check files; a file with schema errors is still indexed by name when it has one."""
    files: dict[str, SpecFile] = {}
    problems: list[Diagnostic] = []
    for spec, file_problems in _read_files(paths, root):
        problems += file_problems
        if spec is None:
            continue
        path = spec.path
        name = spec.data.get("name")
        if not isinstance(name, str):
            continue
        if path.stem != name:
            problems.append(
                spec.diagnostic(
                    ("name",),
                    f"spec {name!r} is in a file named {path.name}",
                    f"rename the file to {name}{path.suffix}, or set `name: {path.stem}`",
                )
            )
        if name in files:
            problems.append(
                spec.diagnostic(
                    ("name",),
                    f"two specs are named {name!r}: {files[name].display} and {spec.display}",
                    "give each spec its own name",
                )
            )
            continue
        files[name] = spec
    return files, problems


def _read_files(paths: list[Path], root: Path) -> list[tuple[SpecFile | None, list[Diagnostic]]]:
    """Each file parsed and schema-checked, in the order given; a large project's files are dealt
    out to a forked process per core (parsing and checking is Python, one core's speed). What
    each process opened reaches the memo's record of this run."""
    real_root = root.resolve()  # once, not per spec

    def read_share(share: Sequence[Path]) -> tuple[list[tuple[SpecFile | None, list[Diagnostic]]], set, set]:
        with recording() as (files_read, dirs_listed):
            return [_read_one(link, root, real_root) for link in share], files_read, dirs_listed

    shares = deal_out(paths, PARALLEL_READ_MIN, read_share)
    for _, files_read, dirs_listed in shares:
        note_reads(files_read, dirs_listed)
    return interleave([results for results, _, _ in shares])


def _read_one(link: Path, root: Path, real_root: Path) -> tuple[SpecFile | None, list[Diagnostic]]:
    if (why := outside_project(link, root, real_root)) is not None:
        hint = "gen reads only the project's own files: copy the spec into it"
        return None, [Diagnostic(str(link), 0, 0, "", f"not read: {why}", hint)]
    path = link.resolve()
    spec, problems = read_spec_file(path, path.relative_to(real_root).as_posix())
    if spec is not None:
        problems += check_against_schema(spec)
    return spec, problems


def _find_parents(files: dict[str, SpecFile], root: Path, given: list[Path]) -> list[Diagnostic]:
    """Load parents not given explicitly from the directory of the spec naming them (never a
    file read already: one that failed has said so once)."""
    problems: list[Diagnostic] = []
    pending = list(files.values())
    read: set[Path] = set()
    while pending:
        spec = pending.pop()
        parent = spec.data.get("extends")
        if not isinstance(parent, str) or parent in files:
            continue
        read = read or {path.resolve() for path in given}  # resolved only when a parent is missing
        candidates = [spec.path.parent / f"{parent}{suffix}" for suffix in SPEC_SUFFIXES]
        existing = [c for c in candidates if is_file(c) and c.resolve() not in read]
        if not existing:
            continue
        read.add(existing[0].resolve())
        more, more_problems = _read_all(existing[:1], root)
        problems += more_problems
        files.update(more)
        pending += more.values()
    return problems


# Deeper chains are a mistake or an attack; resolving them costs time quadratic in the depth.
MAX_EXTENDS_DEPTH = 16


# A "known specs" hint names at most this many: a project of 1000 specs is not one line.
MAX_NAMES_IN_HINT = 10


def _chain(name: str, files: dict[str, SpecFile], unreadable: set[str]) -> tuple[list[SpecFile], Diagnostic | None]:
    """The files from the root of name's chain down to name, or the problem that breaks it; no
    files and no problem when an ancestor's own file could not be read (its errors are said,
    and a "not found" here would send the user looking for a file that exists)."""
    chain = [files[name]]
    while (parent := chain[-1].data.get("extends")) is not None:
        if not isinstance(parent, str):  # the schema check has said so; the chain ends here
            break
        if parent in unreadable:
            return [], None
        if parent not in files:
            return chain, chain[-1].diagnostic(("extends",), f"parent spec {parent!r} not found", _known(parent, files))
        if any(f.data["name"] == parent for f in chain):
            names = [f.data["name"] for f in chain]
            cycle = " -> ".join(names[names.index(parent) :] + [parent])
            return chain, chain[-1].diagnostic(
                ("extends",), f"extends forms a cycle: {cycle}", "one spec of the cycle must start from a base instead"
            )
        chain.append(files[parent])
        if len(chain) > MAX_EXTENDS_DEPTH:
            return chain, files[name].diagnostic(
                ("extends",),
                f"the extends chain of {name!r} is deeper than {MAX_EXTENDS_DEPTH} specs",
                "flatten it: a child may extend any spec, not only the one above it",
            )
    return list(reversed(chain)), None


def _known(wanted: str, files: dict[str, SpecFile]) -> str:
    close = difflib.get_close_matches(wanted, list(files), n=1)
    names = sorted(files)
    shown = ", ".join(names[:MAX_NAMES_IN_HINT])
    more = f" and {len(names) - MAX_NAMES_IN_HINT} more" if len(names) > MAX_NAMES_IN_HINT else ""
    return (f"did you mean {close[0]!r}? " if close else "") + f"known specs: {shown}{more}"


def _resolve(chain: list[SpecFile], resolved: dict[str, ResolvedSpec]) -> ResolvedSpec:
    own = chain[-1].data
    parent_name = own.get("extends")
    if parent_name is None:
        data, origins = dict(own), own_origins(own, 0)
    else:
        parent = resolved[parent_name]
        data, origins = merge(parent.data, parent.origins, own, len(chain) - 1)
    return ResolvedSpec(own["name"], chain[-1].path, own, with_defaults(data), parent_name, tuple(chain), origins)


def load_project(paths: list[Path], root: Path) -> Project:
    """Load, validate and resolve specs. Raises SpecError carrying every problem found."""
    spec_paths = _spec_paths(paths)
    files, problems = _read_all(spec_paths, root)
    problems += _find_parents(files, root, spec_paths)
    broken = {d.file for d in problems if d.severity == "error"}
    unreadable = {Path(f).stem for f in broken if Path(f).suffix in SPEC_SUFFIXES} - set(files)
    chains: dict[str, list[SpecFile]] = {}
    for name in sorted(files):
        chain, problem = _chain(name, files, unreadable)
        if problem is not None:
            if problem not in problems:
                problems.append(problem)
            continue
        if not chain:
            continue
        if not any(f.display in broken for f in chain):  # merging needs schema-valid input
            chains[name] = chain
    resolved: dict[str, ResolvedSpec] = {}
    for name in sorted(chains, key=lambda n: (len(chains[n]), n)):  # parents first
        spec = _resolve(chains[name], resolved)
        problems += check_spec(spec, resolved.get(spec.parent) if spec.parent else None)
        resolved[name] = spec
    errors = [d for d in problems if d.severity == "error"]
    if errors:
        raise SpecError(sorted(errors, key=lambda d: (d.file, d.line, d.column, d.message)))
    return Project(root, _dependency_order(resolved), [d for d in problems if d.severity != "error"])


def _dependency_order(specs: dict[str, ResolvedSpec]) -> dict[str, ResolvedSpec]:
    """Parents before children; siblings by name, each subtree kept together (what validate
    lists and render goes through). Every parent is resolved and no chain is a cycle by now."""
    sorter = graphlib.TopologicalSorter({name: [spec.parent] if spec.parent else [] for name, spec in specs.items()})
    sorter.prepare()
    ordered: dict[str, ResolvedSpec] = {}
    pending: list[str] = []  # a stack: the children a spec makes ready come next, first by name on top
    while sorter.is_active():
        pending += sorted(sorter.get_ready(), reverse=True)
        name = pending.pop()
        ordered[name] = specs[name]
        sorter.done(name)
    return ordered
