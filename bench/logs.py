"""Log throughput: the same lines through a pipe into a file, through s6-log as people run it, and
through gen's own logger (templates/init/s6/usr/lib/gen/init/log-run, executed as is); then inside a
container: gen's image pipeline vs a plain file write in the same container vs podman's k8s-file
log driver.

Every variant of one repetition runs back to back (so the ratios compare like with like on a noisy
machine); times are medians over the repetitions; ratio = pipe-to-file time / variant time. Before
a time counts, the output is checked: every input line arrived exactly once, in order, whole
(timestamps stripped where the variant adds them), and gen's variants kept every file within the
rotation size they were given.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (REPO, WORK, BenchError, Section, Size, Storage, bundled_examples, median, require, run,
                    size_from_argv)

LOG_RUN = REPO / "templates" / "init" / "s6" / "usr" / "lib" / "gen" / "init" / "log-run"
INIT_ROOT = REPO / "templates" / "init" / "s6"
MAX_SIZE = 268435455  # s6-log's largest `s`, gen's default logging.max_size

_ISO8601 = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}  ", re.MULTILINE)
_TAI64N = re.compile(rb"^@[0-9a-f]{24} ", re.MULTILINE)
_K8S_FILE = re.compile(rb"^\S+ (stdout|stderr) ([FP]) (.*)$")


@dataclass(frozen=True)
class Params:
    host_mb: int  # MB of lines per run on the host
    container_mb: int  # MB of lines per run in a container
    repeats: int  # runs per variant, median taken


PARAMS = {Size.SMOKE: Params(5, 2, 1), Size.QUICK: Params(100, 30, 2), Size.FULL: Params(300, 300, 3)}


@dataclass(frozen=True)
class Variant:
    name: str
    argv: tuple[str, ...]  # "DIR" stands for the log directory
    stamp: str = ""  # "", "iso8601" or "tai64n": what the variant puts before each line
    env: dict[str, str] = field(default_factory=dict)
    max_file: int | None = None  # every file must stay within this many bytes


def gen_variant(name: str, **env: str) -> Variant:
    """gen's log-run itself, with the settings the image's ENV would give it."""
    settings = {"GEN_INIT_ROOT": str(INIT_ROOT), "GEN_LOG_MAX_SIZE": str(MAX_SIZE), "GEN_LOG_KEEP": "3", **env}
    stamp = {"iso8601": "iso8601", "tai64n": "tai64n"}.get(env.get("GEN_LOG_TIMESTAMP", ""), "")
    return Variant(name, ("GEN-LOG-RUN",), stamp, settings, MAX_SIZE)


def host_variants() -> list[Variant]:
    s = f"s{MAX_SIZE}"
    return [
        Variant("pipe to a file (limit)", ("sh", "-c", 'exec cat > "$0/current"', "DIR")),
        Variant(f"stock s6-log n3 {s}", ("s6-log", "n3", s, "DIR")),
        Variant(f"stock s6-log n3 {s} T", ("s6-log", "n3", s, "T", "DIR"), "iso8601"),
        gen_variant("gen log-run (s6-log -b, 8 KiB early rotation)"),
        gen_variant("gen log-run, copy to stdout (/dev/null)", GEN_LOG_STDOUT_FILE="1"),
        gen_variant("gen log-run, iso8601 timestamps (T)", GEN_LOG_TIMESTAMP="iso8601"),
        gen_variant("gen log-run, tai64n timestamps (t)", GEN_LOG_TIMESTAMP="tai64n"),
        Variant(f"s6-log -l 0 n3 {s} (no line limit)", ("s6-log", "-l", "0", "n3", s, "DIR")),
        Variant(f"s6-log -b n3 {s} S{3 * MAX_SIZE} (total cap)", ("s6-log", "-b", "n3", s, f"S{3 * MAX_SIZE}", "DIR")),
    ]


# -- data and checks ---------------------------------------------------------------------------


def make_data(path: Path, total_bytes: int, line_bytes: int) -> bytes:
    """Numbered lines of exactly line_bytes (newline included); written to path and returned."""
    count = max(1, total_bytes // line_bytes)
    pad = b"x" * (line_bytes - 14)
    data = b"".join(b"%012d %s\n" % (i, pad) for i in range(count))
    path.write_bytes(data)
    return data


def log_files(directory: Path) -> list[Path]:
    """Archives (@<tai64n>.s, oldest first) then current: the order s6-log wrote them."""
    archives = sorted(p for p in directory.iterdir() if p.name.startswith("@"))
    return archives + [directory / "current"]


def strip_stamps(text: bytes, stamp: str) -> bytes:
    """The lines as the app wrote them; every line must carry the stamp."""
    if not stamp:
        return text
    pattern = _ISO8601 if stamp == "iso8601" else _TAI64N
    stripped, count = pattern.subn(b"", text)
    lines = text.count(b"\n")
    if count != lines:
        raise AssertionError(f"{lines - count} of {lines} lines lack a {stamp} timestamp")
    return stripped


def check_log_dir(directory: Path, expected: bytes, stamp: str = "", max_file: int | None = None) -> None:
    """Every expected line arrived once, in order, whole; files within max_file bytes."""
    files = log_files(directory)
    if not files[-1].exists():
        raise AssertionError(f"{directory}: no current file")
    if max_file is not None:
        big = [(p.name, p.stat().st_size) for p in files if p.stat().st_size > max_file]
        if big:
            raise AssertionError(f"{directory}: files over the {max_file}-byte rotation size: {big}")
    got = strip_stamps(b"".join(p.read_bytes() for p in files), stamp)
    compare(got, expected, str(directory))


def compare(got: bytes, expected: bytes, where: str) -> None:
    if got == expected:
        return
    at = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    line = expected.count(b"\n", 0, at)
    raise AssertionError(f"{where}: output differs from the input at line {line} "
                         f"({len(got)} bytes arrived, {len(expected)} sent)")


def k8s_file_payload(log: bytes) -> bytes:
    """The bytes a container wrote to stdout, rebuilt from podman's k8s-file log (F ends a line,
    P is a partial line that continues in the next record)."""
    out = []
    for record in log.split(b"\n"):
        if not record:
            continue
        match = _K8S_FILE.match(record)
        if match is None:
            raise AssertionError(f"not a k8s-file record: {record[:80]!r}")
        out.append(match.group(3) + (b"\n" if match.group(2) == b"F" else b""))
    return b"".join(out)


# -- host --------------------------------------------------------------------------------------


def run_host_variant(variant: Variant, data_path: Path, expected: bytes, work: Path) -> float:
    tmp = Path(tempfile.mkdtemp(dir=work))
    log_dir = tmp / "log"
    log_dir.mkdir()
    env = None
    cwd = None
    argv = [str(log_dir) if a == "DIR" else a for a in variant.argv]
    if argv == ["GEN-LOG-RUN"]:
        # log-run reads its settings from files in its service directory, as under s6-supervise.
        service = tmp / "service"
        service.mkdir()
        (service / "dir").write_text(str(log_dir))
        (service / "stdout").write_text(variant.env.get("GEN_LOG_STDOUT_FILE", "0"))
        env = {**os.environ, **variant.env}
        cwd = service
        argv = [str(LOG_RUN)]
    with data_path.open("rb") as source:
        start = time.perf_counter()
        run(argv, stdin=source, stdout=subprocess.DEVNULL, env=env, cwd=cwd, timeout=900)
        elapsed = time.perf_counter() - start
    check_log_dir(log_dir, expected, variant.stamp, variant.max_file)
    shutil.rmtree(tmp)
    return elapsed


def interleaved_medians(variants, repeats: int, run) -> dict[str, float]:
    """Median seconds of run(variant) per variant name, the variants taking turns in each round so
    a noisy moment of the machine hits them all alike."""
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            times[variant.name].append(run(variant))
    return {name: median(values) for name, values in times.items()}


def host_section(total_mb: int, repeats: int) -> Section:
    require("s6-log")
    section = Section(f"Log throughput on the host ({total_mb} MB per run, median of {repeats})",
                      ["line bytes", "variant", "s", "MB/s", "ratio to pipe-to-file"])
    variants = host_variants()
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="logs-", dir=WORK) as tmp:
        work = Path(tmp)
        for line_bytes in (100, 1000):
            data_path = work / f"data-{line_bytes}"
            expected = make_data(data_path, total_mb * 1_000_000, line_bytes)
            times = interleaved_medians(variants, repeats,
                                        lambda v: run_host_variant(v, data_path, expected, work))
            limit = times[variants[0].name]
            for variant in variants:
                seconds = times[variant.name]
                section.rows.append([line_bytes, variant.name, round(seconds, 3),
                                     round(len(expected) / 1e6 / seconds, 1), round(limit / seconds, 2)])
            data_path.unlink()
    section.notes.append("pipe to a file: `cat DATA | cat > DIR/current`; every s6-log variant reads the same "
                         "pipe; outputs checked line by line (timestamps stripped) before timing counts.")
    return section


# -- container ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerVariant:
    name: str
    args: tuple[str, ...]  # podman run arguments after the mounts, IMAGE stands for the image
    checks: tuple[str, ...]  # "files": log dir complete; "k8s": the container log complete
    stamp: str = ""


def container_variants() -> list[ContainerVariant]:
    logs = ("-e", "GEN_LOG_DIR=/bench/logs")
    return [
        ContainerVariant("write to a file in the container (limit)",
                         ("--log-driver", "k8s-file", "--entrypoint", "sh", "IMAGE", "-c",
                          "exec cat /bench/input > /bench/logs/current"), ("files",)),
        ContainerVariant("gen pipeline, files only (logging.stdout false, as debian-s6)",
                         ("--log-driver", "k8s-file", *logs, "-e", "GEN_LOG_STDOUT=0", "IMAGE", "cat",
                          "/bench/input"), ("files",)),
        ContainerVariant("gen pipeline as runtime ships it (files + stdout into k8s-file)",
                         ("--log-driver", "k8s-file", *logs, "IMAGE", "cat", "/bench/input"), ("files", "k8s")),
        ContainerVariant("gen pipeline as runtime ships it, --log-driver none",
                         ("--log-driver", "none", *logs, "IMAGE", "cat", "/bench/input"), ("files",)),
        ContainerVariant("podman k8s-file driver alone (cat to stdout, no init)",
                         ("--log-driver", "k8s-file", "--entrypoint", "cat", "IMAGE", "/bench/input"), ("k8s",)),
    ]


def run_container(storage: Storage, image: str, variant: ContainerVariant, data_path: Path,
                  expected: bytes | None, work: Path) -> float:
    """Seconds from `podman run -d` to the container's exit; with expected, the output is checked."""
    log_dir = Path(tempfile.mkdtemp(dir=work))
    name = f"gen-bench-log-{log_dir.name}"
    args = [image if a == "IMAGE" else a for a in variant.args]
    start = time.perf_counter()
    # :U gives the log directory to the user the image runs as (non-root in the bundled images), as
    # the image's own log directory is; every variant pays the same chown of an empty directory.
    storage.podman("run", "-d", "--name", name, "-v", f"{data_path}:/bench/input:ro",
                   "-v", f"{log_dir}:/bench/logs:U", *args, timeout=300)
    code = storage.podman("wait", name, timeout=900).stdout.strip()
    elapsed = time.perf_counter() - start
    try:
        if code != "0":
            raise BenchError(f"{variant.name}: container exited {code}: "
                             f"{storage.podman('logs', name, check=False).stderr[-500:]}")
        if expected is not None:
            if "files" in variant.checks:
                check_log_dir(log_dir, expected)
            if "k8s" in variant.checks:
                path = storage.podman("inspect", "--format", "{{.HostConfig.LogConfig.Path}}", name).stdout.strip()
                compare(k8s_file_payload(Path(path).read_bytes()), expected, f"{variant.name}: k8s-file log")
    finally:
        storage.podman("rm", "-f", name, check=False, timeout=120)
        shutil.rmtree(log_dir, ignore_errors=True)
    return elapsed


def container_section(storage: Storage, image: str, total_mb: int, repeats: int) -> Section:
    require("podman")
    section = Section(f"Log throughput inside a container ({image}, {total_mb} MB per run, median of {repeats})",
                      ["line bytes", "variant", "s (net)", "MB/s", "ratio to file in container",
                       "x k8s-file driver"])
    variants = container_variants()
    with tempfile.TemporaryDirectory(prefix="clogs-", dir=WORK) as tmp:
        work = Path(tmp)
        empty = work / "empty"
        empty.write_bytes(b"")
        # Start-up and teardown of each variant with nothing to log, subtracted from its times.
        overhead = {v.name: median([run_container(storage, image, v, empty, None, work) for _ in range(repeats)])
                    for v in variants}
        for line_bytes in (100, 1000):
            data_path = work / f"data-{line_bytes}"
            expected = make_data(data_path, total_mb * 1_000_000, line_bytes)
            times = interleaved_medians(variants, repeats, lambda v: max(
                run_container(storage, image, v, data_path, expected, work) - overhead[v.name], 1e-3))
            limit, k8s = times[variants[0].name], times[variants[-1].name]
            for variant in variants:
                seconds = times[variant.name]
                section.rows.append([line_bytes, variant.name, round(seconds, 3),
                                     round(len(expected) / 1e6 / seconds, 1), round(limit / seconds, 2),
                                     round(k8s / seconds, 2)])
            data_path.unlink()
    section.notes.append("net = wall time of `podman run -d` .. `podman wait` minus the same variant's run with "
                         "empty input (start-up: " + ", ".join(f"{v:.2f} s" for v in overhead.values()) + ").")
    section.notes.append("checked: the log directory (and the k8s-file log, rebuilt from its F/P records) holds "
                         "every line once, in order.")
    return section


def measure(size: Size) -> list[Section]:
    params = PARAMS[size]
    host = host_section(params.host_mb, params.repeats)
    examples = bundled_examples(size)
    container = container_section(examples.storage, examples.ref("runtime"), params.container_mb, params.repeats)
    host.notes.append(target_note(host, ratio_column=4))
    return [host, container]


def target_note(section: Section, ratio_column: int) -> str:
    """Issue targets: gen's pipeline at 0.5 of pipe-to-file with rotation, 0.3 with timestamps."""
    parts = []
    for row in section.rows:
        line_bytes, name, ratio = row[0], row[1], row[ratio_column]
        if name == "gen log-run (s6-log -b, 8 KiB early rotation)":
            parts.append(f"{line_bytes}-byte lines: {ratio} with rotation (target 0.5, "
                         f"{'met' if ratio >= 0.5 else 'missed'})")
        elif name == "gen log-run, iso8601 timestamps (T)":
            parts.append(f"{line_bytes}-byte lines: {ratio} with timestamps (target 0.3, "
                         f"{'met' if ratio >= 0.3 else 'missed'})")
    return "Targets: " + "; ".join(parts) + "."


if __name__ == "__main__":
    for part in measure(size_from_argv(sys.argv)):
        print(part.markdown())
