"""Hostile specs (issue 20): each is refused with one clear line naming file:line:col, exit 2, no
traceback, before anything can grow without bound: alias bombs, deep nesting, huge integers,
tags, merge keys, non-string keys, lone surrogates and endless extends chains."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BASE = "base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"
LAUGHS = "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
CASES = {
    "alias bomb": ('a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + LAUGHS,
                   "expands to more than 100000 nodes"),
    "deep nesting": ("name: deep\nx: " + "[" * 10000 + "]" * 10000 + "\n", "nesting deeper than 64"),
    "huge integer": ("name: big\nx: " + "9" * 5000 + "\n", "an integer of 5000 digits"),
    "merge key": ("name: merge\n<<: {tags: [a]}\n" + BASE, "merge keys (<<) are not allowed"),
    "integer key": ("name: intkey\ntags: [a]\n1: x\n" + BASE, "key 1 is not a string"),
    "null key": ("name: nullkey\ntags: [a]\n~: x\n" + BASE, "key None is not a string"),
    "custom tag": ("name: tag\ntags: [!foo bar]\n" + BASE, "the tag !foo is not allowed"),
    "python tag": ("name: pytag\ntags: [!!python/object/apply:os.system [touch /tmp/x]]\n" + BASE,
                   "python/object/apply:os.system is not allowed"),
    "lone surrogate": ('name: s\ndescription: "\\ud800"\ntags: [a]\n' + BASE, "lone surrogate"),
}


def validate(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generator", "validate", "-C", str(project)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_spec_is_one_clear_error(tmp_path, case):
    text, said = CASES[case]
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "hostile.yaml").write_text(text)
    got = validate(tmp_path)
    assert got.returncode == 2, got.stderr[-2000:]
    assert "Traceback" not in got.stderr
    assert said in got.stderr
    assert re.search(r"specs/hostile\.yaml:\d+:\d+: ", got.stderr), got.stderr


def test_an_endless_extends_chain_is_cut_short(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "s0.yaml").write_text("name: s0\ntags: [a]\n" + BASE)
    for i in range(1, 1000):
        (specs / f"s{i}.yaml").write_text(f"name: s{i}\ntags: [a]\nextends: s{i - 1}\n")
    got = validate(tmp_path)
    assert got.returncode == 2 and "Traceback" not in got.stderr
    assert "is deeper than 16 specs" in got.stderr


def test_a_spec_over_a_megabyte_is_refused_unread(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "big.yaml").write_text("name: big\n" + "# padding\n" * 120_000)
    got = validate(tmp_path)
    assert got.returncode == 2 and "at most 1048576" in got.stderr
