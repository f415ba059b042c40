"""Log throughput of gen's default logger, gen-log (templates/logger/gen-log.c), side by side with
s6-log and with podman's k8s-file log driver, in one run.

On the host, the same lines go through a pipe into a file (the limit), through s6-log as people run
it, and through gen's logger run script (templates/init/s6/usr/lib/gen/init/log-run, executed as is
from a copy of the init with gen-log compiled here as the image's builder stage compiles it): with
gen-log (the default: plain, copying to stdout, iso8601 or tai64n stamps) and with GEN_LOGGER=s6-log.
Inside a container (the bundled runtime image): a plain file write in the container (the limit),
gen's pipeline as shipped (gen-log, files plus the stdout copy into k8s-file), gen-log with files
only or with --log-driver none, the pipeline with GEN_LOGGER=s6-log, and podman's k8s-file driver
alone (the app's stdout straight into it, no init). Each container variant is timed twice: the
app's own time to write its lines (measured in the container: how long logging holds the app up)
and end to end, from the app's first write until the last of the variant's outputs (podman's
k8s-file log, the log files) holds the last line. Both ends are read off the kernel's real-time
clock, which the container shares with the host (`date +%s%N` in the app, the outputs' mtimes),
so podman's start-up and teardown, 0.4-0.6 s and noisy, are in neither.

Every variant of one repetition runs back to back (so the ratios compare like with like on a noisy
machine); times are medians over the repetitions; ratio = limit time / variant time. Before a time
counts, the output is checked: every input line arrived exactly once, in order, whole (timestamps
stripped where the variant adds them), and gen's variants kept every file within the rotation size
they were given; where the variant copies to the container's stdout, the k8s-file log is checked
the same way.
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

from common import (
    REPO,
    WORK,
    BenchError,
    Section,
    Size,
    Storage,
    bundled_examples,
    median,
    require,
    run,
    size_from_argv,
)

INIT_TEMPLATE = REPO / "templates" / "init" / "s6"  # copied, never written to
GEN_LOG_SOURCE = REPO / "templates" / "logger" / "gen-log.c"
INIT_LIB = Path("usr") / "lib" / "gen" / "init"  # log-run and gen-log, below an init root
# The flags of the image's builder stage (templates/stages/gen-log-build.j2), less its warnings.
GEN_LOG_CFLAGS = (
    "-std=gnu11",
    "-O2",
    "-pthread",
    "-fPIE",
    "-pie",
    "-fstack-protector-strong",
    "-D_FORTIFY_SOURCE=2",
    "-Wl,-z,relro,-z,now",
)
MAX_SIZE = 268435455  # s6-log's largest `s`, gen's default logging.max_size

_ISO8601 = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}  ", re.MULTILINE)
_TAI64N = re.compile(rb"^@[0-9a-f]{24} ", re.MULTILINE)
_K8S_FILE = re.compile(rb"^\S+ (stdout|stderr) ([FP]) (.*)$")


@dataclass(frozen=True)
class Params:
    host_mb: int  # MB of lines per run on the host
    container_mb: int  # MB of lines per run in a container
    repeats: int  # runs per variant, median taken


PARAMS = {Size.SMOKE: Params(5, 2, 1), Size.QUICK: Params(100, 100, 2), Size.FULL: Params(300, 300, 3)}


@dataclass(frozen=True)
class Variant:
    name: str
    argv: tuple[str, ...]  # "DIR" stands for the log directory
    stamp: str = ""  # "", "iso8601" or "tai64n": what the variant puts before each line
    env: dict[str, str] = field(default_factory=dict)
    max_file: int | None = None  # every file must stay within this many bytes


def gen_variant(name: str, init_root: Path, **env: str) -> Variant:
    """gen's log-run itself, from init_root, with the settings the image's ENV would give it."""
    settings = {
        "GEN_INIT_ROOT": str(init_root),
        "GEN_LOGGER": "gen-log",
        "GEN_LOG_MAX_SIZE": str(MAX_SIZE),
        "GEN_LOG_KEEP": "3",
        **env,
    }
    stamp = {"iso8601": "iso8601", "tai64n": "tai64n"}.get(env.get("GEN_LOG_TIMESTAMP", ""), "")
    return Variant(name, ("GEN-LOG-RUN",), stamp, settings, MAX_SIZE)


GEN_LOG_DEFAULT = "gen log-run, gen-log (default)"
GEN_LOG_ISO8601 = "gen log-run, gen-log, iso8601 timestamps"
GEN_S6_LOG = "gen log-run, GEN_LOGGER=s6-log"


def host_variants(init_root: Path) -> list[Variant]:
    """The limit first; init_root is an init with gen-log in it (build_init_root)."""
    s = f"s{MAX_SIZE}"
    return [
        Variant("pipe to a file (limit)", ("sh", "-c", 'exec cat > "$0/current"', "DIR")),
        Variant(f"stock s6-log n3 {s}", ("s6-log", "n3", s, "DIR")),
        Variant(f"stock s6-log n3 {s} T", ("s6-log", "n3", s, "T", "DIR"), "iso8601"),
        gen_variant(GEN_LOG_DEFAULT, init_root),
        gen_variant("gen log-run, gen-log, copy to stdout (/dev/null)", init_root, GEN_LOG_STDOUT_FILE="1"),
        gen_variant(GEN_LOG_ISO8601, init_root, GEN_LOG_TIMESTAMP="iso8601"),
        gen_variant("gen log-run, gen-log, tai64n timestamps", init_root, GEN_LOG_TIMESTAMP="tai64n"),
        gen_variant(GEN_S6_LOG, init_root, GEN_LOGGER="s6-log"),
        gen_variant(
            "gen log-run, GEN_LOGGER=s6-log, copy to stdout (/dev/null)",
            init_root,
            GEN_LOGGER="s6-log",
            GEN_LOG_STDOUT_FILE="1",
        ),
        Variant(f"s6-log -l 0 n3 {s} (no line limit)", ("s6-log", "-l", "0", "n3", s, "DIR")),
        Variant(f"s6-log -b n3 {s} S{3 * MAX_SIZE} (total cap)", ("s6-log", "-b", "n3", s, f"S{3 * MAX_SIZE}", "DIR")),
    ]


def build_init_root(work: Path) -> Path:
    """A copy of gen's s6 init under work with gen-log compiled into it, as the images have it;
    log-run finds it through GEN_INIT_ROOT. templates/ is only read."""
    require("gcc")
    binary = work / "gen-log-build" / "gen-log"
    binary.parent.mkdir(parents=True, exist_ok=True)
    run(["gcc", *GEN_LOG_CFLAGS, "-o", str(binary), str(GEN_LOG_SOURCE)], timeout=300)
    root = work / "init-root"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(INIT_TEMPLATE, root, symlinks=True)
    shutil.copy2(binary, root / INIT_LIB / "gen-log")
    return root


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
    at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
    line = expected.count(b"\n", 0, at)
    raise AssertionError(
        f"{where}: output differs from the input at line {line} ({len(got)} bytes arrived, {len(expected)} sent)"
    )


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


def settle() -> None:
    """Called before every timed run: the run before leaves up to a few hundred MB dirty, and their
    writeback would otherwise land on whichever variant comes next (measured by hand: the same
    container pair went from 0.75x to 1.0x once each run started from a synced disk)."""
    os.sync()


def run_host_variant(variant: Variant, data_path: Path, expected: bytes, work: Path) -> float:
    """Seconds for `cat DATA | VARIANT` (a pipe, as under s6-supervise) until both end."""
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
        # Only the variant's own settings: none of gen's or s6's from the caller's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEN_", "S6_"))}
        env.update({k: v for k, v in variant.env.items() if k != "GEN_LOG_STDOUT_FILE"})
        cwd = service
        argv = [str(Path(variant.env["GEN_INIT_ROOT"]) / INIT_LIB / "log-run")]
    with data_path.open("rb") as source:
        settle()
        start = time.perf_counter()
        feeder = subprocess.Popen(["cat"], stdin=source, stdout=subprocess.PIPE)
        try:
            run(argv, stdin=feeder.stdout, stdout=subprocess.DEVNULL, env=env, cwd=cwd, timeout=900)
        finally:
            feeder.stdout.close()
            code = feeder.wait(timeout=60)
        elapsed = time.perf_counter() - start
    if code != 0:
        raise BenchError(f"{variant.name}: cat feeding the pipe exited {code}")
    check_log_dir(log_dir, expected, variant.stamp, variant.max_file)
    shutil.rmtree(tmp)
    return elapsed


def interleaved_runs(variants, repeats: int, run) -> dict[str, list]:
    """run(variant)'s results per variant name, the variants taking turns in each round so a noisy
    moment of the machine hits them all alike."""
    results: dict[str, list] = {v.name: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:
            results[variant.name].append(run(variant))
    return results


def interleaved_medians(variants, repeats: int, run) -> dict[str, float]:
    """Median seconds of run(variant) per variant name, taken in turns (interleaved_runs)."""
    return {name: median(values) for name, values in interleaved_runs(variants, repeats, run).items()}


def host_section(total_mb: int, repeats: int) -> Section:
    require("s6-log", "gcc")
    section = Section(
        f"Log throughput on the host ({total_mb} MB per run, median of {repeats})",
        ["line bytes", "variant", "s", "MB/s", "ratio to pipe-to-file"],
    )
    WORK.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="logs-", dir=WORK) as tmp:
        work = Path(tmp)
        variants = host_variants(build_init_root(work))
        for line_bytes in (100, 1000):
            data_path = work / f"data-{line_bytes}"
            expected = make_data(data_path, total_mb * 1_000_000, line_bytes)
            times = interleaved_medians(variants, repeats, lambda v: run_host_variant(v, data_path, expected, work))  # noqa: B023 (run in this iteration)
            limit = times[variants[0].name]
            for variant in variants:
                seconds = times[variant.name]
                section.rows.append(
                    [
                        line_bytes,
                        variant.name,
                        round(seconds, 3),
                        round(len(expected) / 1e6 / seconds, 1),
                        round(limit / seconds, 2),
                    ]
                )
            data_path.unlink()
    section.notes.append(
        "every variant reads the same lines through a pipe: `cat DATA | VARIANT`, the limit "
        "being `cat DATA | cat > DIR/current`; outputs checked line by line (timestamps stripped) "
        "before timing counts."
    )
    section.notes.append(
        "gen log-run: templates/init/s6/usr/lib/gen/init/log-run as the images run it, with "
        f"GEN_LOG_MAX_SIZE={MAX_SIZE} and GEN_LOG_KEEP=3 (rotation on); gen-log compiled here with "
        "the builder stage's flags; its stdout copy, and s6-log's, go to /dev/null."
    )
    return section


# -- container ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerVariant:
    name: str
    args: tuple[str, ...]  # podman run arguments after the mounts, IMAGE stands for the image
    checks: tuple[str, ...]  # "files": log dir complete; "k8s": the container log complete
    stamp: str = ""


@dataclass(frozen=True)
class ContainerRun:
    end_to_end: float  # from the app's first write until its outputs hold every line
    app: float  # the app's own time to write everything, timed inside the container


SHIPPED = "gen pipeline as shipped (gen-log, files + stdout into k8s-file)"
K8S_ALONE = "podman k8s-file driver alone (cat to stdout, no init)"
APP_TIME = "/bench/time/app-ns"  # "START END": the app's first and last moment, ns of real time
# s: an mtime is the kernel's coarse clock (one tick, 4 ms at HZ=250), so shorter is not a time
MEASURABLE = 0.02


def timed_app(redirect: str = "") -> str:
    """The app of every variant: cat of the input, timed by itself (GNU date in the image), so the
    time the app spends blocked on its log is measured apart from start-up and the engine's drain."""
    return f"t0=$(date +%s%N); cat /bench/input{redirect}; t1=$(date +%s%N); echo $t0 $t1 > {APP_TIME}"


def last_write_ns(outputs: list[Path]) -> int:
    """When the last of the outputs was last written (mtime: the kernel's real-time clock)."""
    return max(p.stat().st_mtime_ns for p in outputs)


def container_variants() -> list[ContainerVariant]:
    """The limit first, podman's k8s-file driver alone last."""
    logs = ("-e", "GEN_LOG_DIR=/bench/logs")
    app = ("IMAGE", "sh", "-c", timed_app())  # CMD under gen's init
    no_init = ("--entrypoint", "sh", "IMAGE", "-c")
    return [
        ContainerVariant(
            "write to a file in the container (limit)",
            ("--log-driver", "k8s-file", *no_init, timed_app(" > /bench/logs/current")),
            ("files",),
        ),
        ContainerVariant(SHIPPED, ("--log-driver", "k8s-file", *logs, *app), ("files", "k8s")),
        ContainerVariant(
            "gen pipeline, gen-log, files only (GEN_LOG_STDOUT=0)",
            ("--log-driver", "k8s-file", *logs, "-e", "GEN_LOG_STDOUT=0", *app),
            ("files",),
        ),
        ContainerVariant("gen pipeline, gen-log, --log-driver none", ("--log-driver", "none", *logs, *app), ("files",)),
        ContainerVariant(
            "gen pipeline, GEN_LOGGER=s6-log (files + stdout into k8s-file)",
            ("--log-driver", "k8s-file", *logs, "-e", "GEN_LOGGER=s6-log", *app),
            ("files", "k8s"),
        ),
        ContainerVariant(K8S_ALONE, ("--log-driver", "k8s-file", *no_init, timed_app()), ("k8s",)),
    ]


def run_container(
    storage: Storage, image: str, variant: ContainerVariant, data_path: Path, expected: bytes, work: Path
) -> ContainerRun:
    """One run of the variant; its outputs are checked before the times count."""
    log_dir = Path(tempfile.mkdtemp(dir=work))
    time_dir = Path(tempfile.mkdtemp(dir=work))
    name = f"gen-bench-log-{log_dir.name}"
    args = [image if a == "IMAGE" else a for a in variant.args]
    settle()
    # :U gives the mounted directories to the user the image runs as (non-root in the bundled
    # images), as the image's own log directory is; every variant pays the same chown.
    storage.podman(
        "run",
        "-d",
        "--name",
        name,
        "-v",
        f"{data_path}:/bench/input:ro",
        "-v",
        f"{log_dir}:/bench/logs:U",
        "-v",
        f"{time_dir}:{Path(APP_TIME).parent}:U",
        *args,
        timeout=300,
    )
    code = storage.podman("wait", name, timeout=900).stdout.strip()
    try:
        if code != "0":
            raise BenchError(
                f"{variant.name}: container exited {code}: {storage.podman('logs', name, check=False).stderr[-500:]}"
            )
        start_ns, end_ns = map(int, (time_dir / Path(APP_TIME).name).read_text().split())
        outputs = []
        if "files" in variant.checks:
            check_log_dir(log_dir, expected)
            outputs += log_files(log_dir)
        if "k8s" in variant.checks:
            path = Path(storage.podman("inspect", "--format", "{{.HostConfig.LogConfig.Path}}", name).stdout.strip())
            compare(k8s_file_payload(path.read_bytes()), expected, f"{variant.name}: k8s-file log")
            outputs.append(path)
        # Checked first: the outputs hold exactly the app's lines, so their last write is its last line's.
        end_to_end = (last_write_ns(outputs) - start_ns) / 1e9
    finally:
        storage.podman("rm", "-f", "-v", name, check=False, timeout=120)
        shutil.rmtree(log_dir, ignore_errors=True)
        shutil.rmtree(time_dir, ignore_errors=True)
    return ContainerRun(end_to_end, (end_ns - start_ns) / 1e9)


def container_section(storage: Storage, image: str, total_mb: int, repeats: int) -> Section:
    require("podman")
    section = Section(
        f"Log throughput inside a container ({image}, {total_mb} MB per run, median of {repeats})",
        [
            "line bytes",
            "variant",
            "app s",
            "app MB/s",
            "app: ratio to file in container",
            "app: x k8s-file driver",
            "end to end s",
            "end to end: x k8s-file driver",
        ],
    )
    variants = container_variants()
    with tempfile.TemporaryDirectory(prefix="clogs-", dir=WORK) as tmp:
        work = Path(tmp)
        for line_bytes in (100, 1000):
            data_path = work / f"data-{line_bytes}"
            expected = make_data(data_path, total_mb * 1_000_000, line_bytes)
            runs = interleaved_runs(
                variants,
                repeats,
                lambda v: run_container(storage, image, v, data_path, expected, work),  # noqa: B023
            )
            app = {name: max(median([r.app for r in rs]), 1e-3) for name, rs in runs.items()}
            end_to_end = {name: median([r.end_to_end for r in rs]) for name, rs in runs.items()}
            limit, k8s = app[variants[0].name], app[K8S_ALONE]
            for variant in variants:
                seconds, whole = app[variant.name], end_to_end[variant.name]
                measurable = whole >= MEASURABLE
                section.rows.append(
                    [
                        line_bytes,
                        variant.name,
                        round(seconds, 3),
                        round(len(expected) / 1e6 / seconds, 1),
                        round(limit / seconds, 2),
                        round(k8s / seconds, 2),
                        round(whole, 3) if measurable else f"< {MEASURABLE}",
                        round(end_to_end[K8S_ALONE] / whole, 2) if measurable else "n/a",
                    ]
                )
            data_path.unlink()
    section.notes.append(
        "app = the time `cat` in the container takes to write every line (timed in the container), "
        "that is how long logging holds the app up; end to end = from the app's first write until "
        "the last write into the variant's outputs (podman's k8s-file log and/or the log files, by "
        "their mtimes: the same real-time clock, in the kernel both share), so podman's start-up and "
        "teardown are not in it; an mtime is one clock tick coarse, so below "
        f"{MEASURABLE} s no ratio is given."
    )
    section.notes.append(
        "checked: the log directory (and the k8s-file log, rebuilt from its F/P records) holds "
        "every line once, in order."
    )
    return section


def measure(size: Size) -> list[Section]:
    params = PARAMS[size]
    host = host_section(params.host_mb, params.repeats)
    host.notes.append(host_target_note(host))
    examples = bundled_examples(size)
    container = container_section(examples.storage, examples.ref("runtime"), params.container_mb, params.repeats)
    container.notes.append(container_target_note(container))
    return [host, container]


def _met(value: float, target: float) -> str:
    return "met" if value >= target else "missed"


def host_target_note(section: Section) -> str:
    """Issue targets on the host: gen-log through log-run at 0.5 of pipe-to-file with rotation on,
    0.3 with timestamps; and how it compares with the same log-run on s6-log."""
    ratio = {(row[0], row[1]): row[4] for row in section.rows}
    parts = []
    for line_bytes in sorted({row[0] for row in section.rows}):
        plain, stamped = ratio[line_bytes, GEN_LOG_DEFAULT], ratio[line_bytes, GEN_LOG_ISO8601]
        s6 = ratio[line_bytes, GEN_S6_LOG]
        parts.append(
            f"{line_bytes}-byte lines: gen-log {plain} of pipe-to-file with rotation (target 0.5, "
            f"{_met(plain, 0.5)}), {stamped} with iso8601 timestamps (target 0.3, {_met(stamped, 0.3)}); "
            f"{round(plain / s6, 1) if s6 else 'n/a'}x the same log-run with GEN_LOGGER=s6-log"
        )
    return "Targets: " + "; ".join(parts) + "."


def container_target_note(section: Section) -> str:
    """Issue targets in a container: under the shipped pipeline (rotation on, files + stdout into
    k8s-file) the app writes at or above its speed into podman's k8s-file driver alone and at 0.5
    of a file write in the container, and end to end every line is in k8s-file at least as soon."""
    parts = []
    for row in section.rows:
        if row[1] == SHIPPED:
            line_bytes, to_file, to_k8s, end_to_end = row[0], row[4], row[5], row[7]
            parts.append(
                f"{line_bytes}-byte lines: the app under the shipped pipeline writes at {to_k8s}x its "
                f"speed into k8s-file alone (target 1, {_met(to_k8s, 1.0)}) and {to_file} of a file "
                f"write in the container (target 0.5, {_met(to_file, 0.5)}); end to end, until podman "
                "holds every line, "
                + (
                    f"{end_to_end}x k8s-file alone (target 1, {_met(end_to_end, 1.0)})"
                    if isinstance(end_to_end, float)
                    else "too short at this size to measure"
                )
            )
    return "Targets: " + "; ".join(parts) + "."


if __name__ == "__main__":
    for part in measure(size_from_argv(sys.argv)):
        print(part.markdown())
