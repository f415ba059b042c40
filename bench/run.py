"""Run every benchmark on this machine and write bench/results.md (see bench/run).

Each benchmark module has `measure(quick) -> Section | list[Section]` and checks what it measured
before it reports a number; one that cannot run here (a missing tool) or fails its check is
reported as such and the others still run. Images are built in storages under bench/.work/,
never in the user's containers storage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback

from common import BENCH_DIR, BenchError, Section

MODULES = {
    "render_scale": "render scale",
    "decisions": "build decisions",
    "layers": "layer ordering",
    "images": "image size and layers",
    "reproducibility": "reproducibility",
    "runtime": "stop latency and zombies",
    "logs": "log throughput",
}


def run_one(module_name: str, quick: bool) -> tuple[list[Section], float]:
    start = time.monotonic()
    try:
        result = importlib.import_module(module_name).measure(quick)
        sections = result if isinstance(result, list) else [result]
    except (BenchError, AssertionError) as exc:
        kind = "could not run here" if isinstance(exc, BenchError) else "FAILED its correctness check"
        sections = [Section(MODULES[module_name], [], notes=[f"{kind}: {exc}"])]
    except Exception:  # a bug in a benchmark must not lose the others' results
        sections = [Section(MODULES[module_name], [], notes=["crashed:\n```\n" + traceback.format_exc() + "```"])]
    return sections, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(MODULES)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and less data, for a first look")
    parser.add_argument("--output", default=str(BENCH_DIR / "results.md"), help="Markdown file to write")
    options = parser.parse_args()
    unknown = [n for n in options.names if n not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    chosen = options.names or list(MODULES)
    started = time.monotonic()
    parts = [f"# gen benchmarks\n\nWritten by `bench/run{' --quick' if options.quick else ''}` on "
             f"{time.strftime('%Y-%m-%d')}, {platform.system()} {platform.release()}, {os.cpu_count()} cores. "
             "Times are medians; every ratio compares runs made side by side in this one run.\n"]
    failed = False
    for name in chosen:
        print(f"== {MODULES[name]} ...", flush=True)
        sections, seconds = run_one(name, options.quick)
        for section in sections:
            text = section.markdown()
            failed |= any(note.startswith(("FAILED", "crashed")) for note in section.notes)
            parts.append(text)
            print(text, flush=True)
        print(f"   ({seconds:.0f} s)", flush=True)
    parts.append(f"Whole run: {time.monotonic() - started:.0f} s.\n")
    with open(options.output, "w") as out:
        out.write("\n".join(parts))
    print(f"wrote {options.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
