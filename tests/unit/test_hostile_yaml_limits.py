"""The spec reader's bounds that a base or an alias used to slip past: an integer written in
hexadecimal, octal or binary (the digit limit counted decimal digits only, and jsonschema's repr of
a 5000-digit value died on Python's int-to-text limit), and an alias of a long string (the node
limit counts nodes, not characters: one 65,000-character string aliased 20,000 times grew
`gen validate` to 1.3 GB). Each is one clear line at the offending scalar or alias, exit 2, no
traceback, in bounded time and memory."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.spec import yamlfile
from generator.spec.yamlfile import read_spec_file
from tests.hostile import Case, problems_of, run_isolated, warm_up

BASE = "base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"
HEAD = "name: x\ntags: [a]\n" + BASE + "init: {kind: none}\n"
SPEC = HEAD + "cmd: [sh]\n"
MEMORY_CAP = 1 << 30  # address space for the gen under test: what used to run away dies, not the machine


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def validate(project: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    got = subprocess.run(
        [sys.executable, "-m", "generator", "validate", "-C", str(project)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_cap_memory,
    )
    return got, time.monotonic() - started


def refused_at(tmp_path: Path, text: str, said: str) -> tuple[int, int]:
    """Validate a project of one spec holding text: exit 2, one error naming file:line:col and
    saying `said`, no traceback, in seconds. Returns the (line, column) named."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "x.yaml").write_text(text)
    got, seconds = validate(tmp_path)
    assert got.returncode == 2, got.stderr[-2000:]
    assert "Traceback" not in got.stderr and "MemoryError" not in got.stderr, got.stderr[-2000:]
    errors = [line for line in got.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, got.stderr[-2000:]
    assert said in errors[0], got.stderr[-2000:]
    assert seconds < 10, f"took {seconds:.1f} s"
    where = re.match(r"error: specs/x\.yaml:(\d+):(\d+): ", errors[0])
    assert where, errors[0]
    return int(where[1]), int(where[2])


# --- G1: integers in any base ---------------------------------------------------------------------

HUGE_INTS = {
    "hex": "0x" + "f" * 5000,
    "hex upper case": "0x" + "F" * 5000,
    "octal": "0o" + "7" * 5000,
    "binary": "0b" + "1" * 5000,
    "hex with underscores": "0x_" + "_".join(["ffff"] * 1250),
    "negative hex": "-0x" + "f" * 5000,
    "signed octal": "+0o" + "7" * 5000,
    "negative binary with underscores": "-0b" + "1_0" * 2500,
    "hex just past 10**30": hex(10**30),
    "octal just past 10**30": "0o" + format(10**30, "o"),
    "binary just past 10**30": "0b" + format(10**30, "b"),
}


@pytest.mark.parametrize("case", sorted(HUGE_INTS))
def test_a_huge_integer_in_any_base_is_one_clear_error(tmp_path, case):
    value = HUGE_INTS[case]
    line, column = refused_at(tmp_path, SPEC + f"description: {value}\n", "an integer of ")
    assert (line, column) == (6, len("description: ") + 1)


FIELDS = {
    "description": ("description: {}\n", len("description: ")),
    "expose": ("expose: [{}]\n", len("expose: [")),
    "users uid": ("users: [{{name: app, uid: {}}}]\n", len("users: [{name: app, uid: ")),
}


@pytest.mark.parametrize("base", ["0x" + "f" * 5000, "0o" + "7" * 5000, "0b" + "1" * 5000], ids=["hex", "oct", "bin"])
@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_huge_integer_is_refused_in_every_field(tmp_path, field, base):
    template, column = FIELDS[field]
    where = refused_at(tmp_path, SPEC + template.format(base), "an integer of 5000 ")
    assert where == (6, column + 1)


def test_integers_in_any_base_are_bounded_below_ten_to_the_thirty(tmp_path):
    """The bound is the value's, as decimal's 30 digits: 10**30 - 1 reads in every base, 10**30 in
    none; leading zeros do not count against a hexadecimal, octal or binary value."""
    path = tmp_path / "x.yaml"
    largest = 10**30 - 1
    for written in (hex(largest), "0o" + format(largest, "o"), "0b" + format(largest, "b"), "0x" + "0" * 200 + "1f"):
        path.write_text(f"a: {written}\nb: -{written}\n")
        spec, problems = read_spec_file(path, "x.yaml")
        assert spec is not None and problems == [], (written, problems)
        assert spec.data == {"a": int(written, 0), "b": -int(written, 0)}
    for written in (hex(largest + 1), "0o" + format(largest + 1, "o"), "0b" + format(largest + 1, "b"), "9" * 31):
        path.write_text(f"a: 1\nb: {written}\n")
        spec, problems = read_spec_file(path, "x.yaml")
        assert spec is None and [(p.line, p.column) for p in problems] == [(2, 4)], (written, problems)
        assert "an integer of" in problems[0].message and "quote it" in problems[0].hint
    path.write_text("a: '0x" + "f" * 5000 + "'\nb: 0x1F\nc: 0o17\nd: 0b101\ne: -0x_ff\n")  # quoted: text
    spec, _ = read_spec_file(path, "x.yaml")
    assert spec is not None and spec.data == {"a": "0x" + "f" * 5000, "b": 31, "c": 15, "d": 5, "e": -255}


# --- G2: the characters aliases expand to --------------------------------------------------------

BIG = "y" * 65_000
LIMIT_SAID = f"past {yamlfile.MAX_EXPANDED_CHARS} characters"


def _aliases(name: str, count: int) -> str:
    return ", ".join([f"*{name}"] * count)


EXPANSIONS = {
    # the reported spec: 145 KB that reached 1.3 GB in `gen validate`
    "a string aliased 20,000 times in cmd": HEAD + f"cmd: [&a {BIG}, {_aliases('a', 20_000)}]\n",
    "a string aliased as env values": (
        HEAD + f"cmd: [sh]\nenv:\n  A0: &a {BIG}\n" + "".join(f"  A{i}: *a\n" for i in range(1, 200))
    ),
    "a list of strings aliased": (
        HEAD + f"cmd: [sh]\nx-parts: &a [{BIG[:30_000]}, {BIG[:30_000]}]\nentrypoint: [{_aliases('a', 200)}]\n"
    ),
    "a mapping aliased": HEAD + f"cmd: [sh]\nx-env: &a {{A: {BIG}}}\nservices: [{_aliases('a', 200)}]\n",
    "aliases of aliases": (  # every alias names few nodes: the node limit never sees it
        HEAD + f"cmd: [sh]\nx-a: &a [{BIG[:50_000]}]\nx-b: &b [{_aliases('a', 10)}]\nx-c: [{_aliases('b', 10)}]\n"
    ),
}


@pytest.mark.parametrize("case", sorted(EXPANSIONS))
def test_aliases_of_long_text_are_stopped_at_the_alias_that_crosses_the_limit(tmp_path, case):
    text = EXPANSIONS[case]
    line, column = refused_at(tmp_path, text, LIMIT_SAID)
    assert text.splitlines()[line - 1][column - 1] == "*", "points at an alias"


def test_the_alias_named_is_the_first_past_the_limit(tmp_path):
    text = EXPANSIONS["a string aliased 20,000 times in cmd"]
    where = refused_at(tmp_path, text, LIMIT_SAID)
    # the anchor and 63 aliases of 65,000 characters, with the other fields', fit in 4 MiB; the 64th does not
    crossing = yamlfile.MAX_EXPANDED_CHARS // len(BIG)
    assert where == (5, len(f"cmd: [&a {BIG}, ") + 4 * (crossing - 1) + 1)


def test_a_spec_with_many_small_aliases_still_validates(tmp_path):
    value = "a shared value, written once and aliased where it is needed again"
    text = (
        HEAD
        + "entrypoint: &entry [/bin/sh, -c]\n"
        + "cmd: [&run run-the-app, "
        + _aliases("run", 500)
        + "]\n"
        + "healthcheck: {test: *entry}\n"
        + f"labels:\n  l0: &v {value}\n"
        + "".join(f"  l{i}: *v\n" for i in range(1, 1500))
        + "env:\n"
        + "".join(f"  E{i}: *v\n" for i in range(1500))
    )
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "x.yaml").write_text(text)
    got, seconds = validate(tmp_path)
    assert got.returncode == 0 and got.stderr == "", got.stderr[-2000:]
    assert seconds < 10


def test_a_spec_just_under_the_limit_renders_in_bounded_memory():
    """The limit sits where what passes it stays cheap: 4 MiB of aliased text renders well inside
    the hostile budget (2 s, 200 MB), the file only 65 KB."""
    warm_up()
    count = yamlfile.MAX_EXPANDED_CHARS // len(BIG) - 2  # with the anchor, within the limit
    text = HEAD + f"cmd: [&a {BIG}, {_aliases('a', count)}]\n"
    for command in (("validate",), ("render",)):
        outcome = run_isolated(Case({}, [], command, raw_spec=text))
        assert outcome.code == 0, outcome.stderr[-2000:]
        assert problems_of(outcome, seconds_limit=20, memory_limit_mb=200) == [], outcome


def test_thousands_of_problems_are_reported_by_the_first_hundred(tmp_path):
    """One wrong value aliased 20,000 times is 20,000 problems: the first 100 and one line saying
    there are more, in bounded time (the fuzz run found 19,448 lines taking 2.7 s of CPU)."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "x.yaml").write_text(
        HEAD.replace("init: {kind: none}", "init: {kind: s6}")
        + "cmd: [sh]\nservices: [&s "
        + "y" * 100
        + ", "
        + ", ".join(["*s"] * 20_000)
        + "]\n"
    )
    started = time.monotonic()
    got = subprocess.run(
        [sys.executable, "-m", "generator", "validate", "-C", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 2 and "Traceback" not in got.stderr
    errors = [line for line in got.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 101, errors[-3:]
    assert [e for e in errors if "more than 100 problems: only the first are shown" in e] == [
        "error: specs/x.yaml:1:1: $: more than 100 problems: only the first are shown"
    ]
    assert time.monotonic() - started < 10
