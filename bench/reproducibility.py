"""Reproducibility: the share of bundled images whose image id is identical across two builds
from empty storage (`gen build --check-reproducible`, which also names differing files). The
check itself is the correctness test: it compares the two ids of every image it reports.
"""

from __future__ import annotations

import json

from common import SHARED_STORAGE, Section, bundled_examples, timed


def measure(quick: bool) -> Section:
    project = bundled_examples()
    seconds, proc = timed(lambda: SHARED_STORAGE.gen("build", "--check-reproducible", "--format", "json",
                                                     project=project, timeout=3600, check=False))
    results = json.loads(proc.stdout)
    same = [r["name"] for r in results if r["reproducible"] and r["first"] == r["second"]]
    section = Section("Reproducibility: two builds from empty storage",
                      ["image", "identical", "image id"],
                      [[r["name"], "yes" if r["name"] in same else "NO", r["first"][:12]] for r in results])
    share = len(same) / len(results) if results else 0.0
    section.notes.append(f"{len(same)} of {len(results)} bundled images bit-identical ({share:.0%}; target 100%: "
                         f"{'met' if share == 1 else 'missed'}); both builds of the whole chain took {seconds:.0f} s.")
    for r in results:
        if r["name"] not in same:
            section.notes.append(f"{r['name']} differs in: " + ", ".join(r["differences"][:10]))
    return section


if __name__ == "__main__":
    print(measure(quick=True).markdown())
