"""Image size and layer count of each bundled image against a hand-written single-stage equivalent.

The hand-written Dockerfile is what a careful person would write without gen: one file per image,
FROM the same bootstrapped Debian root, with every instruction of the image's chain (parent
first) in one stage (builder stages, such as gen-log's compiler stage, are kept as they are: a
careful person compiles in a builder stage too), and the usual package idiom (`apt-get update && apt-get install -y
--no-install-recommends ... && rm -rf /var/lib/apt/lists/*`) where gen installs packages with its
reproducibility cleanup. Both are built with the same buildah flags in one storage. Before the
sizes count, each hand-written image is checked to hold its chain's packages. A smoke run compares
only the deepest image, whose chain covers every bundled spec.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from common import WORK, BenchError, Section, Size, bundled_examples, run, size_from_argv, stored
from layers import instructions

SKIPPED_HEADER = ("ARG BASE_IMAGE", "FROM ")
HEADER = ["ARG BASE_IMAGE", "FROM ${BASE_IMAGE}", "ARG SOURCE_DATE_EPOCH=1700000000"]


@dataclass(frozen=True)
class Params:
    images: int | None  # the deepest this many bundled images are compared; None: all


PARAMS = {Size.SMOKE: Params(1), Size.QUICK: Params(None), Size.FULL: Params(None)}


def manifest(output: Path, name: str) -> dict:
    return json.loads((output / name / "gen-manifest.json").read_text())


def chain(output: Path, name: str) -> list[str]:
    names = [name]
    while parent := manifest(output, names[0]).get("parent"):
        names.insert(0, parent)
    return names


def is_apt_install(line: str) -> bool:
    """An `apt-get [-o OPTION ...] install` line, as gen's templates write it."""
    return "apt-get " in line and " install " in line


def packages_of(step: str) -> list[str]:
    lines = step.splitlines()
    start = next(i for i, line in enumerate(lines) if is_apt_install(line)) + 1
    found = []
    for line in lines[start:]:
        word = line.strip().rstrip("\\").strip()
        if word.startswith(";"):
            return found
        found.append(word)
    raise BenchError("could not read the package list of:\n" + step)


def usual_apt(packages: list[str]) -> str:
    return (
        "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        + " ".join(packages)
        + " && rm -rf /var/lib/apt/lists/*"
    )


def moved_copy(step: str, name: str) -> str:
    if step.startswith("COPY --from="):
        return step  # from a builder stage, not the context
    if "--chmod" in step or "--chown" in step:
        raise BenchError(f"{name}: COPY with options is not flattened by this benchmark: {step}")
    body = step[len("COPY ") :].strip()
    if body.startswith("["):
        *sources, dest = json.loads(body)
    else:
        *sources, dest = body.split()
    return "COPY " + json.dumps([f"{name}/{src}" for src in sources] + [dest])


def stages(dockerfile: str) -> tuple[list[list[str]], list[str]]:
    """(builder stages, final stage) of a Dockerfile, each a list of instructions."""
    found: list[list[str]] = [[]]
    for step in instructions(dockerfile):
        if step.startswith("FROM "):
            found.append([])
        found[-1].append(step)
    return found[1:-1], found[-1]


def flattened(output: Path, name: str) -> tuple[str, list[str]]:
    """The hand-written Dockerfile for name, and every package its final stage installs."""
    builders: list[str] = []
    lines, packages = list(HEADER), []
    for member in chain(output, name):
        builder_stages, final = stages((output / member / "Dockerfile").read_text())
        for stage in builder_stages:
            builders += [moved_copy(s, member) if s.startswith("COPY ") else s for s in stage]
        for step in final:
            if step.startswith(SKIPPED_HEADER):
                continue
            if step.startswith("COPY "):
                step = moved_copy(step, member)
            elif step.startswith("RUN") and any(is_apt_install(line) for line in step.splitlines()):
                packages += packages_of(step)
                step = usual_apt(packages_of(step))
            lines.append(step)
    return "\n".join(HEADER[:1] + builders + lines[1:]) + "\n", packages


def root_base(output: Path, name: str) -> str:
    root = chain(output, name)[0]
    header = (output / root / "Dockerfile").read_text()
    return next(line.split("=", 1)[1] for line in header.splitlines() if line.startswith("ARG BASE_IMAGE="))


def deepest(names: list[str], count: int | None) -> list[str]:
    """The last count names (sorted shallowest first); all of them for None."""
    return names if count is None else names[-count:]


def measure(size: Size) -> Section:
    examples = bundled_examples(size)
    storage, output = examples.storage, examples.project / "output"
    context = WORK / "handwritten"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(output, context)
    section = Section(
        "Image size and layers: gen's images against hand-written single-stage equivalents",
        ["image", "gen MB", "gen layers", "hand-written MB", "hand-written layers", "gen / hand size"],
    )
    names = sorted(
        (p.name for p in output.iterdir() if (p / "gen-manifest.json").is_file()), key=lambda n: len(chain(output, n))
    )
    for name in deepest(names, PARAMS[size].images):
        text, packages = flattened(output, name)
        dockerfile = context / f"{name}.Dockerfile"
        dockerfile.write_text(text)
        tag = f"localhost/bench/hand-{name}:1"
        base_id = stored(storage, root_base(output, name)).id
        run(
            [
                "buildah",
                *storage.host.global_flags(),
                "bud",
                "--isolation",
                "chroot",
                "--layers",
                "--format",
                "oci",
                "--pull=never",
                "--timestamp",
                "1700000000",
                "--build-arg",
                f"BASE_IMAGE={base_id}",
                "-t",
                tag,
                "-f",
                str(dockerfile),
                str(context),
            ],
            env=storage.env,
            timeout=900,
        )
        if packages:
            storage.podman("run", "--rm", "--entrypoint", "dpkg", tag, "-s", *packages, timeout=120)
        gen, hand = stored(storage, examples.ref(name)), stored(storage, tag)
        section.rows.append(
            [
                name,
                round(gen.size / 1e6, 1),
                gen.layers,
                round(hand.size / 1e6, 1),
                hand.layers,
                f"{gen.size / hand.size:.2f}",
            ]
        )
    section.notes.append(
        "Layer counts include the bootstrapped root's one layer. The hand-written files are kept "
        f"in {context.relative_to(WORK.parent.parent)}/ for inspection."
    )
    return section


if __name__ == "__main__":
    print(measure(size_from_argv(sys.argv)).markdown())
