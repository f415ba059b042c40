"""Reproducibility: the share of bundled images whose image id is identical across two builds
from empty storage (`gen build --check-reproducible`, which also names differing files). The
check itself is the correctness test: it compares the two ids of every image it reports. A smoke
run checks the root image alone (its bootstrap included): gen builds a named image's ancestors too.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from common import BenchError, Section, Size, bundled_examples, size_from_argv, timed
from images import chain


@dataclass(frozen=True)
class Params:
    images: int | None  # the shallowest this many bundled images are checked; None: all


PARAMS = {Size.SMOKE: Params(1), Size.QUICK: Params(None), Size.FULL: Params(None)}


def shallowest(output: Path, count: int | None) -> list[str]:
    """The count images nearest the root, to name to gen; none (gen's default: all) for None."""
    if count is None:
        return []
    names = [p.name for p in output.iterdir() if (p / "gen-manifest.json").is_file()]
    return sorted(names, key=lambda n: (len(chain(output, n)), n))[:count]


def measure(size: Size) -> Section:
    examples = bundled_examples(size)
    names = shallowest(examples.project / "output", PARAMS[size].images)
    seconds, proc = timed(
        lambda: examples.storage.gen(
            "build",
            "--check-reproducible",
            "--format",
            "json",
            *names,
            project=examples.project,
            timeout=3600,
            check=False,
        )
    )
    try:
        results = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise BenchError(
            f"gen build --check-reproducible exited {proc.returncode}:\n"
            + "\n".join(proc.stderr.strip().splitlines()[-8:])
        ) from None
    same = [r["name"] for r in results if r["reproducible"] and r["first"] == r["second"]]
    section = Section(
        "Reproducibility: two builds from empty storage",
        ["image", "identical", "image id"],
        [[r["name"], "yes" if r["name"] in same else "NO", r["first"][:12]] for r in results],
    )
    share = len(same) / len(results) if results else 0.0
    built = " and ".join(names) or "the whole chain"
    section.notes.append(
        f"{len(same)} of {len(results)} bundled images bit-identical ({share:.0%}; target 100%: "
        f"{'met' if share == 1 else 'missed'}); both builds of {built} took {seconds:.0f} s."
    )
    for r in results:
        if r["name"] not in same:
            section.notes.append(f"{r['name']} differs in: " + ", ".join(r["differences"][:10]))
    return section


if __name__ == "__main__":
    print(measure(size_from_argv(sys.argv)).markdown())
