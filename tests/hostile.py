"""Hostile specs and repository layouts, generated (issue 20), and the properties gen must keep
for each: exit 0 or 2 (1 only for `render --check` on stale output), no traceback, nothing read
from or written outside the project, output/ unchanged on failure, time and memory bounded.

Shared by the property test (tests/unit/test_hostile_fuzz.py, a few hundred cases) and the long
fuzz run (`python -m tests.hostile 10000`, whose numbers go in the notes). Cases run in-process
through gen's own entry point, so 10,000 take minutes, not hours.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

SECRET = "hunter2-outside-the-project"
BASE_FIELDS = {
    "name": "x",
    "tags": "[a]",
    "base": "{distro: debian, release: bookworm, bootstrap: {variant: minbase}}",
    "init": "{kind: s6}",
    "cmd": "[sh]",
}
# Top-level fields a hostile value is put into (schema fields, and keys the schema does not know).
TARGET_FIELDS = [
    "name",
    "tags",
    "base",
    "init",
    "cmd",
    "env",
    "labels",
    "users",
    "groups",
    "volumes",
    "logging",
    "sysctls",
    "services",
    "packages",
    "rootfs",
    "templates",
    "extends",
    "platforms",
    "user",
    "description",
    "healthcheck",
    "expose",
    "workdir",
    "unknown_field",
]
FIXED_HOSTILE = [
    "!foo x",
    "!!python/object/apply:os.system [touch /tmp/gen-fuzz-pwned]",
    '"\\ud800"',
    "{1: x}",
    "{~: x}",
    "1000.0",
    "-1",
    "true",
    "null",
    "''",
    "/etc",
    "../../outside",
    "/proc/x",
    "[/etc]",
    "[../..]",
    "{dev.gen.init: x}",
    "{GEN_LOG_DIR: /etc}",
    "{S6_VERBOSITY: '9'}",
    "[gen-0123456789abcdef]",
    "[{name: root, uid: 0}]",
    "[{name: a, uid: 1000.0}]",
    "[{path: /usr, recursive: true}]",
    "{dir: /etc}",
    "*undefined_alias",
    "&a [*a]",
    "{<<: {a: 1}}",
    "[latest, latest-arm64]",
    '"\\x00"',
    "'{{ 7*7 }}'",
    '"{% for x in range(10**9) %}{% endfor %}"',
    "files",
    "tpl",
    "y",
    "2001-12-14",
    "{[a, b]: 1}",
    '{"\\e[31mk\\x07": 1}',
    "a" * 300,
]
LAYOUTS = [
    "spec link out",
    "output link out",
    "image dir link out",
    "file link in output",
    "overlay link out",
    "link in overlay",
    "templates link out",
    "dangling output link",
    "staging link",
    "extends chain",
    "extends cycle",
    "prior output",
    "deep checksum table",
    "deep render memo",
    "gen state link out",
    "draft link out",
    "fifo spec",
    "device spec",
    "deep overlay",
    "control characters in a file name",
]
COMMANDS = [("validate",), ("render",), ("render", "--check"), ("new", "fuzzed")]
DEEP_JSON = "[" * 100_000


def long_aliased_string(size: int, count: int) -> str:
    """One long string and many aliases of it: few nodes, much text once expanded."""
    return "[&s " + "y" * size + ", " + ", ".join(["*s"] * count) + "]"


def alias_bomb(width: int, depth: int) -> str:
    lines = ["&a0 [" + ", ".join(["x"] * width) + "]"]
    for level in range(1, depth):
        lines.append(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return "[" + ", ".join(lines) + "]"


hostile_values = st.one_of(
    st.sampled_from(FIXED_HOSTILE),
    st.builds(alias_bomb, st.integers(2, 12), st.integers(2, 12)),
    st.builds(
        lambda depth, opener: opener * depth + {"[": "]", "{a: ": "}"}[opener] * depth,
        st.integers(1, 5000),
        st.sampled_from(["[", "{a: "]),
    ),
    st.integers(1, 6000).map(lambda digits: "9" * digits),
    st.builds(
        lambda prefix, digits: prefix + "1" * digits, st.sampled_from(["0x", "0o", "0b", "-0x"]), st.integers(1, 20000)
    ),
    st.builds(long_aliased_string, st.integers(1, 70_000), st.integers(1, 30_000)),
    st.text(max_size=40).map(lambda text: json.dumps(text, ensure_ascii=False)),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True).map(lambda f: repr(f) if f == f else ".nan"),
)


@dataclass
class Case:
    spec_fields: dict[str, str]
    layouts: list[str]
    command: tuple[str, ...]
    chain: int = 3
    raw_spec: str | None = None  # the whole file instead of fields (random text)


@st.composite
def cases(draw) -> Case:
    fields = dict(BASE_FIELDS)
    for name in draw(st.lists(st.sampled_from(TARGET_FIELDS), max_size=4, unique=True)):
        fields[name] = draw(hostile_values)
    raw = draw(st.one_of(st.none(), st.none(), st.none(), st.text(max_size=300)))
    return Case(
        fields,
        draw(st.lists(st.sampled_from(LAYOUTS), max_size=4, unique=True)),
        draw(st.sampled_from(COMMANDS)),
        draw(st.integers(1, 40)),
        raw,
    )


# --- running a case ------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float  # wall time
    problems: list[str] = field(default_factory=list)
    memory_mb: float = 0.0  # growth of the peak resident size while the case ran
    cpu_seconds: float = 0.0  # the forked case's own CPU time: its cost even on a busy machine


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root by relative path: kind, bytes or link target, mode; links never followed."""
    found: dict[str, tuple] = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(top) / name
            info = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[rel] = ("file", path.read_bytes(), stat.S_IMODE(info.st_mode))
    return found


def lay_out(sandbox: Path, case: Case) -> Path:
    """The project and, beside it, `outside/`: what a repository's links may point at."""
    project, outside = sandbox / "project", sandbox / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.yaml").write_text(f"name: leak\npassword: {SECRET}\n")
    (outside / "dir" / "precious").write_text(SECRET + "\n")
    specs = project / "specs"
    specs.mkdir(parents=True)
    fields = dict(case.spec_fields)
    layouts = set(case.layouts)
    if layouts & {"overlay link out", "link in overlay", "deep overlay"}:
        fields.setdefault("rootfs", "[files]")
    if "templates link out" in layouts:
        fields.setdefault("templates", "tpl")
    text = case.raw_spec if case.raw_spec is not None else "".join(f"{k}: {v}\n" for k, v in fields.items())
    (specs / "x.yaml").write_text(text, errors="surrogateescape")
    (specs / "files").mkdir()
    (specs / "files" / "motd").write_text("hi\n")
    if "spec link out" in layouts:
        (specs / "leak.yaml").symlink_to(outside / "secret.yaml")
    if "overlay link out" in layouts:
        (specs / "files" / "motd").unlink()
        (specs / "files").rmdir()
        (specs / "files").symlink_to(outside / "dir")
    if "link in overlay" in layouts and (specs / "files").is_dir() and not (specs / "files").is_symlink():
        (specs / "files" / "passwd").symlink_to(outside / "secret.yaml")
    if "templates link out" in layouts:
        (specs / "tpl").symlink_to(outside / "dir")
    if "extends chain" in layouts or "extends cycle" in layouts:
        for i in range(case.chain):
            parent = "x" if i == 0 else f"c{i - 1}"
            if "extends cycle" in layouts and i == case.chain - 1:
                (specs / "x.yaml").write_text(text + f"extends: c{i}\n", errors="surrogateescape")
            (specs / f"c{i}.yaml").write_text(f"name: c{i}\ntags: [a]\nextends: {parent}\n")
    output = project / "output"
    if "output link out" in layouts:
        output.symlink_to(outside / "dir")
    else:
        output.mkdir()
        if "prior output" in layouts:
            (output / "x").mkdir()
            (output / "x" / "Dockerfile").write_text("FROM old\n")
            (output / "x" / "gen-manifest.json").write_text("{}\n")
        if "image dir link out" in layouts:
            (output / "c0").symlink_to(outside / "dir")
        if "dangling output link" in layouts:
            (output / "gone").symlink_to(sandbox / "nowhere")
        if "file link in output" in layouts:
            (output / "y").mkdir()
            (output / "y" / "Dockerfile").symlink_to(outside / "secret.yaml")
    if "staging link" in layouts:
        (project / ".gen-staging-x").symlink_to(outside / "dir")
    if "deep checksum table" in layouts:
        (project / "s6-overlay-checksums.json").write_text(DEEP_JSON)
    if "gen state link out" in layouts:
        (project / ".gen").symlink_to(outside / "dir")
    elif "deep render memo" in layouts:
        (project / ".gen").mkdir()
        (project / ".gen" / "render-memo.key").write_bytes(os.urandom(32))
        (project / ".gen" / "render-memo.json").write_text(DEEP_JSON)
    if "draft link out" in layouts:
        (specs / ".fuzzed.yaml.new").symlink_to(outside / "dir" / "precious")
    if "fifo spec" in layouts:  # read, it would wait for a writer forever
        os.mkfifo(specs / "fifo.yaml")
    if "device spec" in layouts:  # read, /dev/zero never ends (a link: making a device needs root)
        (specs / "zero.yaml").symlink_to("/dev/zero")
    if "deep overlay" in layouts and (specs / "files").is_dir() and not (specs / "files").is_symlink():
        (specs / "files").joinpath(*["d"] * 300).mkdir(parents=True)  # deeper than gen walks
    if "control characters in a file name" in layouts:
        (specs / "a\nb\x1b[31m.yaml").write_text("name: x\n")
    return project


def run_gen(args: list[str]) -> tuple[int, str, str]:
    """gen's entry point in this process: (exit code, stdout, stderr). An exception other than
    SystemExit is a traceback a user would have seen: it propagates."""
    from generator.entry import main

    stdout, stderr = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["gen", *args]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, stdout.getvalue(), stderr.getvalue()


def run_case(case: Case, workdir: Path | None = None) -> Outcome:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="gen-fuzz-") as tmp:
        sandbox = Path(tmp)
        project = lay_out(sandbox, case)
        outside_before = snapshot(sandbox / "outside")
        output_before = snapshot(project / "output") if (project / "output").is_dir() else None
        top_before = sorted(p.name for p in sandbox.iterdir())
        started = time.monotonic()
        code, out, err = run_gen([*case.command, "-C", str(project)])
        outcome = Outcome(code, out, err, time.monotonic() - started)
        allowed = (0, 1, 2) if case.command == ("render", "--check") else (0, 2)
        if code not in allowed:
            outcome.problems.append(f"exit {code}")
        if "Traceback" in out + err:
            outcome.problems.append("a traceback was printed")
        if SECRET in out + err:
            outcome.problems.append("a file outside the project was printed")
        if any(c in err for c in "\x1b\x07\r"):
            outcome.problems.append("a control character was printed raw")
        if snapshot(sandbox / "outside") != outside_before:
            outcome.problems.append("something outside the project changed")
        if sorted(p.name for p in sandbox.iterdir()) != top_before:
            outcome.problems.append("something was written beside the project")
        if code != 0 and output_before is not None and snapshot(project / "output") != output_before:
            outcome.problems.append("output/ changed although gen failed")
        return outcome


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up() -> None:
    """Import gen and fill its caches (schema, templates) once here, so that every forked case
    starts from a warm process as a long-lived one would, and times only its own work."""
    run_case(Case(dict(BASE_FIELDS), [], ("render",)))


def run_isolated(case: Case, hang_seconds: float = 60.0) -> Outcome:
    """run_case in a forked child, so that its memory is its own: a fork starts its peak at the
    current size, and the growth past it is the case's. A traceback becomes a problem, a hang a
    killed child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any of the parent's cleanup
        os.close(read_end)
        start = _peak_rss_mb()
        try:
            outcome = run_case(case)
        except BaseException as exc:  # noqa: BLE001 - every escape is what the test looks for
            outcome = Outcome(-1, "", "", 0.0, [f"a traceback: {type(exc).__name__}: {exc}"[:500]])
        outcome.memory_mb = _peak_rss_mb() - start
        with os.fdopen(write_end, "w") as pipe:
            json.dump(outcome.__dict__, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        ready, _, _ = select.select([pipe], [], [], hang_seconds)
        text = pipe.read() if ready else ""
    if not ready:
        os.kill(pid, 9)
    _, _, usage = os.wait4(pid, 0)
    if not text:
        return Outcome(-1, "", "", hang_seconds, ["no answer: hung or killed"])
    return Outcome(**dict(json.loads(text), cpu_seconds=usage.ru_utime + usage.ru_stime))


def problems_of(outcome: Outcome, seconds_limit: float, memory_limit_mb: float, *, cpu: bool = False) -> list[str]:
    """cpu: bound the case's CPU time rather than its wall time (a run beside other work)."""
    found = list(outcome.problems)
    spent = outcome.cpu_seconds if cpu else outcome.seconds
    if spent > seconds_limit:
        found.append(f"took {spent:.2f} s{' of CPU' if cpu else ''}")
    if outcome.memory_mb > memory_limit_mb:
        found.append(f"memory grew by {outcome.memory_mb:.0f} MB")
    return found


def fuzz(count: int, seconds_limit: float = 2.0, memory_limit_mb: float = 200.0, cpu: bool = False) -> int:
    """Run `count` generated cases, all of them (a problem does not stop the run); print each case
    with a problem, then the totals, the slowest case and the largest. 1 on any problem. Time and
    memory mean something only on an otherwise idle machine."""
    from hypothesis import HealthCheck, given, settings

    stats = {"cases": 0, "codes": {}, "slowest": (0.0, None), "slowest_cpu": 0.0, "largest": 0.0, "problems": 0}
    warm_up()

    @settings(max_examples=count, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(cases())
    def one(case: Case) -> None:
        outcome = run_isolated(case)
        stats["cases"] += 1
        stats["codes"][outcome.code] = stats["codes"].get(outcome.code, 0) + 1
        stats["slowest"] = max(stats["slowest"], (outcome.seconds, case), key=lambda pair: pair[0])
        stats["slowest_cpu"] = max(stats["slowest_cpu"], outcome.cpu_seconds)
        stats["largest"] = max(stats["largest"], outcome.memory_mb)
        if problems := problems_of(outcome, seconds_limit, memory_limit_mb, cpu=cpu):
            stats["problems"] += 1
            print(f"PROBLEM: {'; '.join(problems)}\n  {repr(case)[:1000]}\n  {outcome.stderr[-500:]!r}", flush=True)

    started = time.monotonic()
    one()
    seconds, slowest = stats["slowest"]
    print(
        f"{stats['cases']} cases in {time.monotonic() - started:.0f} s; exit codes {stats['codes']}; slowest "
        f"{seconds:.2f} s wall ({repr(slowest)[:300]}), {stats['slowest_cpu']:.2f} s CPU; "
        f"largest memory growth {stats['largest']:.0f} MB; cases with problems: "
        f"{stats['problems']}"
    )
    return 1 if stats["problems"] else 0


if __name__ == "__main__":
    # python -m tests.hostile [COUNT] [--cpu]: --cpu bounds each case's CPU time, not its wall
    # time, for a run beside other work
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    sys.exit(fuzz(int(numbers[0]) if numbers else 10_000, cpu="--cpu" in sys.argv))
