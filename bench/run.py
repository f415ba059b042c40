"""Run every benchmark on this machine and write bench/results.md (see bench/run).

Each benchmark module has `PARAMS` per size and `measure(size) -> Section | list[Section]`, and
checks what it measured before it reports a number; one that cannot run here (a missing tool) or
fails its check is reported as such and the others still run. Images are built in storages under
bench/.work/, never in the user's containers storage.

Exit status: 1 when a section failed its correctness check or crashed; under --smoke also when a
section could not run here, since a smoke run exists to prove that every section can.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

from common import BENCH_DIR, WORK, BenchError, Section, Size

MODULES = {
    "render_scale": "render scale",
    "decisions": "build decisions",
    "layers": "layer ordering",
    "images": "image size and layers",
    "reproducibility": "reproducibility",
    "runtime": "stop latency and zombies",
    "logs": "log throughput",
}
SMOKE_NOTICE = (
    "**Smoke run: its numbers mean nothing.** Every section ran once at its smallest size, the "
    "bundled examples built for this machine's platform only, to prove that it runs here; results "
    "come from `bench/run` (or `--quick`).\n"
)


class Outcome(enum.Enum):
    MEASURED = "measured"
    COULD_NOT_RUN = "could not run here"
    FAILED = "FAILED its correctness check"
    CRASHED = "crashed"


def run_one(module_name: str, size: Size) -> tuple[list[Section], float, Outcome]:
    start = time.monotonic()
    outcome = Outcome.MEASURED
    try:
        result = importlib.import_module(module_name).measure(size)
        sections = result if isinstance(result, list) else [result]
    except (BenchError, AssertionError) as exc:
        outcome = Outcome.COULD_NOT_RUN if isinstance(exc, BenchError) else Outcome.FAILED
        sections = [Section(MODULES[module_name], [], notes=[f"{outcome.value}: {exc}"])]
    except Exception:  # a bug in a benchmark must not lose the others' results
        outcome = Outcome.CRASHED
        sections = [Section(MODULES[module_name], [], notes=["crashed:\n```\n" + traceback.format_exc() + "```"])]
    return sections, time.monotonic() - start, outcome


def exit_code(outcomes: Iterable[Outcome], size: Size) -> int:
    """1 if a section failed or crashed, or (under --smoke) could not run here; else 0."""
    bad = {Outcome.FAILED, Outcome.CRASHED} | ({Outcome.COULD_NOT_RUN} if size is Size.SMOKE else set())
    return 1 if any(outcome in bad for outcome in outcomes) else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(MODULES)}"
    )
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--quick",
        dest="size",
        action="store_const",
        const=Size.QUICK,
        default=Size.FULL,
        help="fewer repetitions and less data, for a first look",
    )
    sizes.add_argument(
        "--smoke",
        dest="size",
        action="store_const",
        const=Size.SMOKE,
        help="prove every section runs here: each runs once at its smallest size, the bundled "
        "examples for this machine's platform only; the numbers mean nothing, and a section "
        "that could not run here makes the exit status 1",
    )
    parser.add_argument(
        "--output",
        help="Markdown file to write (default: bench/results.md; under --smoke, "
        "bench/.work/smoke.md, so smoke numbers never replace results)",
    )
    options = parser.parse_args(argv)
    options.output = options.output or str(
        (WORK / "smoke.md") if options.size is Size.SMOKE else BENCH_DIR / "results.md"
    )
    unknown = [n for n in options.names if n not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    return options


def header(size: Size) -> str:
    flag = "" if size is Size.FULL else f" --{size.value}"
    return (
        "# gen benchmarks\n\n"
        + (SMOKE_NOTICE + "\n" if size is Size.SMOKE else "")
        + f"Written by `bench/run{flag}` on {time.strftime('%Y-%m-%d')}, {platform.system()} "
        f"{platform.release()}, {os.cpu_count()} cores. "
        "Times are medians; every ratio compares runs made side by side in this one run.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.monotonic()
    parts, outcomes = [header(options.size)], []
    for name in options.names or list(MODULES):
        print(f"== {MODULES[name]} ...", flush=True)
        sections, seconds, outcome = run_one(name, options.size)
        outcomes.append(outcome)
        for section in sections:
            text = section.markdown()
            parts.append(text)
            print(text, flush=True)
        print(f"   ({seconds:.0f} s)", flush=True)
    parts.append(f"Whole run: {time.monotonic() - started:.0f} s.\n")
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(parts))
    print(f"wrote {options.output}")
    return exit_code(outcomes, options.size)


if __name__ == "__main__":
    sys.exit(main())
