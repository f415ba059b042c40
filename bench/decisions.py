"""Build decisions: no-op time for 100 built images, and the set each change rebuilds.

100 tiny specs (one root on a local base image, 3 runtimes, 12 stacks, 84 leaves; no RUN steps,
so all 100 build in about a minute; a smoke run builds 5: one of each level and two leaves) are
rendered and built in a storage of the benchmark's own.
Then each scenario changes something and compares three sets:

- gen: what `gen build` actually rebuilt (after `gen render`);
- minimal: the images whose build input changed, plus everything built FROM them;
- laincloud: the rule of laincloud/dockerfiles' `build` command: every image with a file changed
  under its directory in git (here: its spec file), plus everything built FROM those. A base image
  that moved upstream is not a file in git, so that rule never sees it.

Before a set is reported, the benchmark checks that gen's plan converged (a second
`gen build --dry-run` plans nothing).
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from common import WORK, Section, Size, Storage, median, remove_storage, require, size_from_argv, timed

BASE_IMAGE = "localhost/bench/tiny-base:1"


@dataclass(frozen=True)
class Shape:
    """The tree: a root, its runtimes, their stacks, the stacks' leaves."""

    runtimes: int = 3
    stacks_per_runtime: int = 4
    leaves_per_stack: int = 7


@dataclass(frozen=True)
class Params:
    shape: Shape
    repeats: int  # no-op builds timed, median taken

    @property
    def images(self) -> int:
        shape = self.shape
        return 1 + shape.runtimes * (1 + shape.stacks_per_runtime * (1 + shape.leaves_per_stack))


PARAMS = {Size.SMOKE: Params(Shape(1, 1, 2), 1), Size.QUICK: Params(Shape(), 2), Size.FULL: Params(Shape(), 5)}


@dataclass(frozen=True)
class Tree:
    """name -> parent (None for the root), parents before children."""

    parents: dict[str, str | None]

    def descendants(self, name: str) -> set[str]:
        found: set[str] = set()
        for child, parent in self.parents.items():  # parents come first, so one pass suffices
            if parent == name or parent in found:
                found.add(child)
        return found

    def closure(self, names: set[str]) -> set[str]:
        return set(names).union(*(self.descendants(n) for n in names)) if names else set()


def make_tree(shape: Shape = Shape()) -> Tree:
    runtimes, stacks, leaves = range(shape.runtimes), range(shape.stacks_per_runtime), range(shape.leaves_per_stack)
    parents: dict[str, str | None] = {"root": None}
    for r in runtimes:
        parents[f"rt{r}"] = "root"
    for r in runtimes:
        for s in stacks:
            parents[f"rt{r}-st{s}"] = f"rt{r}"
    for r in runtimes:
        for s in stacks:
            for leaf in leaves:
                parents[f"rt{r}-st{s}-app{leaf}"] = f"rt{r}-st{s}"
    return Tree(parents)


def changed_images(shape: Shape) -> tuple[str, str]:
    """(leaf, middle) the scenarios edit: rt1-st2-app3 and rt2-st1 in the full tree, the nearest
    existing ones in a smaller tree."""

    def last(index: int, count: int) -> int:
        return min(index, count - 1)

    leaf = f"rt{last(1, shape.runtimes)}-st{last(2, shape.stacks_per_runtime)}-app{last(3, shape.leaves_per_stack)}"
    return leaf, f"rt{last(2, shape.runtimes)}-st{last(1, shape.stacks_per_runtime)}"


def spec_text(name: str, parent: str | None, value: str = "1", comment: str = "") -> str:
    head = f'name: {name}\ntags: ["1"]\n'
    if parent is None:
        head += f"base: {{distro: debian, release: bookworm, local: {BASE_IMAGE}}}\ninit: {{kind: none}}\n"
    else:
        head += f"extends: {parent}\n"
    return f'{comment}{head}env: {{{name.upper().replace("-", "_")}: "{value}"}}\n'


def base_tarball(marker: str) -> Path:
    """A one-file root filesystem; its content decides the base image id."""
    path = WORK / f"tiny-base-{marker}.tar"
    data = f"{marker}\n".encode()
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("etc/bench-base")
        info.size, info.mtime = len(data), 1700000000
        tar.addfile(info, BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return path


def import_base(storage: Storage, marker: str) -> None:
    storage.podman("import", str(base_tarball(marker)), BASE_IMAGE)


def gen_json(storage: Storage, project: Path, *args: str) -> object:
    return json.loads(storage.gen(*args, "--format", "json", project=project).stdout)


def rebuild(storage: Storage, project: Path) -> set[str]:
    """Render, build, and return the images gen built; check that nothing is left to do."""
    storage.gen("render", project=project)
    report = gen_json(storage, project, "build", "-j", "2")
    built = {b["name"] for b in report["images"] if b["action"] == "built"}
    leftover = [p["name"] for p in gen_json(storage, project, "build", "--dry-run") if p["action"] != "skip"]
    if leftover:
        raise AssertionError(f"gen build left work undone: {leftover}")
    return built


def laincloud_rule(tree: Tree, changed_specs: set[str]) -> set[str]:
    return tree.closure(changed_specs)


def write_specs(project: Path, tree: Tree) -> None:
    specs = project / "specs"
    specs.mkdir(parents=True)
    for name, parent in tree.parents.items():
        (specs / f"{name}.yaml").write_text(spec_text(name, parent))


def edit(project: Path, tree: Tree, name: str, **change: str) -> None:
    (project / "specs" / f"{name}.yaml").write_text(spec_text(name, tree.parents[name], **change))


def noop_seconds(storage: Storage, project: Path, repeats: int) -> tuple[float, float]:
    """(gen build, gen build --dry-run) wall time with every image up to date, whole process."""
    builds = [timed(lambda: storage.gen("build", project=project))[0] for _ in range(repeats)]
    plans = [timed(lambda: storage.gen("build", "--dry-run", project=project))[0] for _ in range(repeats)]
    if any(b["action"] == "built" for b in gen_json(storage, project, "build")["images"]):
        raise AssertionError("a no-op build built something")
    return median(builds), median(plans)


def measure(size: Size) -> Section:
    require("podman", "buildah")
    params = PARAMS[size]
    tree = make_tree(params.shape)
    storage = Storage(WORK / "decisions-storage")
    project = WORK / "decisions-project"
    remove_storage(storage.root)
    shutil.rmtree(project, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        import_base(storage, "one")
        write_specs(project, tree)
        first, built = timed(lambda: rebuild(storage, project))
        if built != set(tree.parents):
            raise AssertionError(f"the first build built {len(built)} of {len(tree.parents)} images")
        build_s, plan_s = noop_seconds(storage, project, params.repeats)
        count = len(tree.parents)
        section = Section(
            f"Build decisions ({count} tiny images on a local base)",
            ["scenario", "gen rebuilt", "minimal set", "laincloud rule", "gen = minimal"],
            notes=[
                f"First build of all {count} images: {first:.0f} s (`gen build -j 2`).",
                f"No-op `gen build` with all {count} up to date: {build_s:.2f} s; `--dry-run`: {plan_s:.2f} s "
                f"(whole process, median; target < 1 s: {'met' if build_s < 1 else 'missed'}).",
            ],
        )
        for row in scenarios(storage, project, tree, changed_images(params.shape)):
            section.rows.append(row)
        misses = [r[0] for r in section.rows if r[4] != "yes"]
        section.notes.append(
            "gen rebuilt exactly the minimal set in every scenario."
            if not misses
            else f"gen's set differs from the minimal one in: {', '.join(misses)}."
        )
        return section
    finally:
        remove_storage(storage.root)


def scenarios(storage: Storage, project: Path, tree: Tree, changed: tuple[str, str]):
    """One row per change: (scenario, gen, minimal, laincloud, equal)."""
    leaf, middle = changed
    cases = [
        ("one leaf spec changed", lambda: edit(project, tree, leaf, value="2"), {leaf}, {leaf}),
        ("one middle spec changed", lambda: edit(project, tree, middle, value="2"), {middle}, {middle}),
        (
            "comment added to the root spec",
            lambda: edit(project, tree, "root", comment="# reviewed\n"),
            set(),
            {"root"},
        ),
        ("base image moved (re-imported)", lambda: import_base(storage, "two"), {"root"}, set()),
    ]
    for title, change, changed_inputs, changed_files in cases:
        change()
        gen_set = rebuild(storage, project)
        minimal = tree.closure(changed_inputs)
        lain = laincloud_rule(tree, changed_files)
        yield [title, len(gen_set), len(minimal), len(lain), "yes" if gen_set == minimal else "no"]


if __name__ == "__main__":
    print(measure(size_from_argv(sys.argv)).markdown())
