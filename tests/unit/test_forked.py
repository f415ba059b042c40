"""Work dealt out to forked processes (generator.forked) gives what one process gives, in the
same order; a child that fails is one clear error; and what the children read reaches the memo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import generator.memo as memo
import generator.spec.project as spec_project
from generator import forked
from generator.errors import GenError

needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing is forked")


@needs_two_cores
def test_each_process_gets_every_nth_item_and_the_results_come_back_in_order():
    shares = forked.deal_out(list(range(11)), 2, lambda share: [(os.getpid(), item * item) for item in share])
    assert len(shares) == min(len(os.sched_getaffinity(0)), 4)
    assert shares[0][0][0] == os.getpid() and all(pid != os.getpid() for pid, _ in shares[1])
    assert [square for _, square in forked.interleave(shares)] == [i * i for i in range(11)]


def test_few_items_stay_in_this_process():
    assert forked.deal_out([1, 2], 64, lambda share: [os.getpid()] * len(share)) == [[os.getpid()] * 2]


@needs_two_cores
def test_a_child_that_raises_is_one_gen_error_and_leaves_no_process(monkeypatch):
    def work(share):
        if os.getpid() != parent:
            raise ValueError("broken share")
        return list(share)

    parent = os.getpid()
    started: list[int] = []
    real = forked.Forked.start.__func__

    def recorded(cls, work):
        child = real(cls, work)
        started.append(child.pid)
        return child

    monkeypatch.setattr(forked.Forked, "start", classmethod(recorded))
    with pytest.raises(GenError, match="a forked gen process failed: ValueError: broken share"):
        forked.deal_out(list(range(10)), 2, work)
    assert started and all(not Path(f"/proc/{pid}").exists() for pid in started), "every child reaped"


def _specs(project: Path, count: int) -> None:
    (project / "specs").mkdir(parents=True)
    for i in range(count):
        (project / "specs" / f"img{i:02d}.yaml").write_text(
            f"name: img{i:02d}\ntags: [a]\n"
            "base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"
            f"init: {{kind: none}}\ncmd: [sh]\ndescription: v{i}\n"
        )


@needs_two_cores
def test_specs_read_in_forks_load_as_in_one_process(tmp_path, monkeypatch):
    _specs(tmp_path, 9)
    (tmp_path / "specs" / "img04.yaml").write_text("name: img04\ntags: [a]\nbogus: 1\n")
    paths = spec_project._spec_paths([tmp_path / "specs"])
    monkeypatch.setattr(spec_project, "PARALLEL_READ_MIN", 10**6)
    alone = spec_project._read_files(paths, tmp_path)
    monkeypatch.setattr(spec_project, "PARALLEL_READ_MIN", 2)
    with memo.recording() as (files_read, _):
        dealt = spec_project._read_files(paths, tmp_path)
    assert [(s.data if s else None, p) for s, p in dealt] == [(s.data if s else None, p) for s, p in alone]
    assert any(p for _, p in dealt), "the broken spec's problems came back"
    assert {str(p.resolve()) for p in paths} <= files_read, "every file a child read is in the record"


@needs_two_cores
def test_a_spec_only_a_child_read_invalidates_the_memo(tmp_path, monkeypatch):
    from generator.cli import main

    _specs(tmp_path, 6)
    monkeypatch.setattr(spec_project, "PARALLEL_READ_MIN", 2)

    def render() -> None:
        with CliRunner().isolation(), pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["gen", "render", "-C", str(tmp_path)])
            try:
                main()
            except SystemExit as exited:
                assert not exited.code

    render()
    spec = tmp_path / "specs" / "img01.yaml"  # the second file: the first child's
    spec.write_text(spec.read_text().replace("v1", "changed"))
    render()
    assert b"changed" in (tmp_path / "output" / "img01" / "gen-spec" / "etc" / "gen" / "spec.json").read_bytes()


@needs_two_cores
def test_output_state_walked_in_forks_is_the_one_process_state(tmp_path, monkeypatch):
    for i in range(7):
        (tmp_path / f"img{i}" / "sub").mkdir(parents=True)
        (tmp_path / f"img{i}" / "sub" / "f").write_text(str(i))
    (tmp_path / "README").write_text("not a folder\n")
    monkeypatch.setattr(memo, "PARALLEL_WALK_MIN", 10**6)
    alone = memo._output_state(tmp_path)
    monkeypatch.setattr(memo, "PARALLEL_WALK_MIN", 2)
    assert memo._output_state(tmp_path) == alone
    (tmp_path / "img5" / "sub" / "f").write_text("edited")  # in a child's share
    assert memo._output_state(tmp_path)[0] != alone[0]
