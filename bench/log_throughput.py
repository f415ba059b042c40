"""Log pipeline throughput on this host: the same bytes through a pipe into a file, and through
s6-log configured as stock s6-overlay-style loggers and as gen's init runs it.

Each variant runs `cat DATA | CMD` with CMD writing into a fresh directory; the time is the median
of several runs, and the ratio is the pipe-to-file time divided by the variant's (1.0 = as fast as
writing the file). Before a speed is reported, the bytes written are checked: every input line
arrived, in order, none cut (timestamps stripped for the variants that add them).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GEN_SIZE = 268435455 - 8192  # what gen's log-run asks s6-log for with the default max_size


@dataclass(frozen=True)
class Variant:
    name: str
    argv: tuple[str, ...]  # DIR is replaced by the log directory
    timestamped: bool = False
    to_stdout: bool = False


VARIANTS = (
    Variant("pipe to a file (limit)", ("sh", "-c", 'cat > "$0/current"', "DIR")),
    Variant("stock s6-log n3 s268435455", ("s6-log", "n3", "s268435455", "DIR")),
    Variant("stock s6-log with T timestamps", ("s6-log", "n3", "s268435455", "T", "DIR"), timestamped=True),
    Variant("gen: s6-log -b n3 s<max-8K>", ("s6-log", "-b", "--", "n3", f"s{GEN_SIZE}", "DIR")),
    Variant("gen: + copy to stdout", ("s6-log", "-b", "--", "1", "n3", f"s{GEN_SIZE}", "DIR"), to_stdout=True),
    Variant("gen: + iso8601 timestamps", ("s6-log", "-b", "--", "T", "n3", f"s{GEN_SIZE}", "DIR"),
            timestamped=True),
)


def make_data(path: Path, total_bytes: int, line_length: int) -> int:
    """Lines of exactly line_length bytes (newline included), numbered; returns the line count."""
    count = total_bytes // line_length
    pad = "x" * line_length
    with path.open("w") as out:
        for i in range(count):
            head = f"{i:012d} "
            out.write(head + pad[: line_length - len(head) - 1] + "\n")
    return count


_ISO8601 = re.compile(rb"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d+  ")  # two spaces follow


def _strip_timestamp(line: bytes) -> bytes:
    """The line as the app wrote it: s6-log's iso8601 stamp and the two spaces after it removed."""
    match = _ISO8601.match(line)
    if match is None:
        raise AssertionError(f"line without a timestamp: {line[:80]!r}")
    return line[match.end():]


def check_output(directory: Path, data: Path, timestamped: bool) -> None:
    """Every line of data arrived once, in order, whole (archives first, then current)."""
    files = sorted(p for p in directory.iterdir() if p.name.startswith("@")) + [directory / "current"]
    got = b"".join(p.read_bytes() for p in files)
    if timestamped:
        got = b"".join(_strip_timestamp(line) + b"\n" for line in got.splitlines())
    if got != data.read_bytes():
        raise AssertionError(f"{directory}: output differs from the input ({len(got)} vs {data.stat().st_size} bytes)")


def run_once(variant: Variant, data: Path, work: Path) -> float:
    directory = Path(tempfile.mkdtemp(dir=work))
    argv = [str(directory) if a == "DIR" else a for a in variant.argv]
    with data.open("rb") as source:
        start = time.perf_counter()
        subprocess.run(argv, stdin=source, stdout=subprocess.DEVNULL, check=True, timeout=600)
        elapsed = time.perf_counter() - start
    check_output(directory, data, variant.timestamped)
    shutil.rmtree(directory)
    return elapsed


def measure(total_mb: int, line_lengths: tuple[int, ...] = (100, 1000), runs: int = 3) -> list[dict]:
    if shutil.which("s6-log") is None:
        raise RuntimeError("s6-log is not installed (apt-get install s6)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="gen-bench-log-", dir=os.environ.get("GEN_BENCH_TMP")) as tmp:
        work = Path(tmp)
        for length in line_lengths:
            data = work / f"data-{length}"
            make_data(data, total_mb * 1_000_000, length)
            medians = {v.name: statistics.median(run_once(v, data, work) for _ in range(runs)) for v in VARIANTS}
            limit = medians[VARIANTS[0].name]
            for variant in VARIANTS:
                seconds = medians[variant.name]
                rows.append({"line_bytes": length, "variant": variant.name, "seconds": round(seconds, 3),
                             "mb_per_s": round(total_mb / seconds, 1), "ratio_to_file": round(limit / seconds, 2)})
            data.unlink()
    return rows
