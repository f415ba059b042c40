"""A render on several processes (render.shards) writes exactly what one process writes, says every
process's errors as one, changes nothing when a process fails, and gives the memo what each read."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import generator.render.shards as shards
from generator.errors import GenError, SpecError
from generator.forked import MAX_PROCESSES
from generator.memo import recording
from generator.render import STAGING_PREFIX, Stager
from generator.spec import load_project

BASE = "base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"
COUNT = 7


def write_project(project: Path, version: str = "v0") -> None:
    """COUNT images; every other one has an overlay of its own, so children read files the parent
    never opens."""
    specs = project / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    for i in range(COUNT):
        extra = f"rootfs: [overlay{i}]\n" if i % 2 else ""
        (specs / f"img{i}.yaml").write_text(
            f"name: img{i}\ntags: [a]\ndescription: {version}\n{BASE}init: {{kind: none}}\ncmd: [sh]\n{extra}"
        )
        if i % 2:
            (specs / f"overlay{i}" / "etc").mkdir(parents=True, exist_ok=True)
            (specs / f"overlay{i}" / "etc" / "app.conf").write_text(f"image={i}\n")


def tree(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def render(project: Path, processes: int, monkeypatch: pytest.MonkeyPatch) -> shards.ShardedRender:
    monkeypatch.setattr(shards, "_process_count", lambda images: processes)
    return shards.render_to_output(load_project([project / "specs"], project), None, project / "output", True)


@pytest.mark.parametrize("processes", [2, 3])
def test_several_processes_write_what_one_writes(tmp_path, monkeypatch, processes):
    one, many = tmp_path / "one", tmp_path / "many"
    for project in (one, many):
        write_project(project)
    alone = render(one, 1, monkeypatch)
    with recording() as (files_read, _):
        shared = render(many, processes, monkeypatch)
    assert tree(many / "output") == tree(one / "output")
    assert sorted(shared.report.written) == sorted(alone.report.written)
    assert len({p.split("/")[0] for p in shared.report.written}) == COUNT
    assert any("/overlay1/" in path for path in files_read), "a child's reads (img1 is its) reach the memo's record"
    assert not list(tmp_path.glob(f"*/{STAGING_PREFIX}*"))


def test_a_change_in_a_childs_share_alone_is_written_and_the_rest_kept(tmp_path, monkeypatch):
    write_project(tmp_path)
    render(tmp_path, 2, monkeypatch)
    parents_file = tmp_path / "output" / "img0" / "Dockerfile"
    before = parents_file.stat().st_ino
    (tmp_path / "specs" / "overlay1" / "etc" / "app.conf").write_text("image=changed\n")
    again = render(tmp_path, 2, monkeypatch)
    assert again.report.written and all(p.startswith("img1/") for p in again.report.written), again.report.written
    assert (tmp_path / "output" / "img0" / "Dockerfile").stat().st_ino == before, "unchanged files are links"
    assert b"image=changed" in b"".join(data for data, _ in tree(tmp_path / "output" / "img1").values())


def test_nothing_changed_stages_nothing_in_any_process(tmp_path, monkeypatch):
    write_project(tmp_path)
    render(tmp_path, 2, monkeypatch)
    monkeypatch.setattr(Stager, "_stage", lambda *a: os._exit(3) if os.getpid() != parent else pytest.fail("staged"))
    parent = os.getpid()
    assert render(tmp_path, 2, monkeypatch).report.written == ()


def test_a_template_error_in_a_childs_share_is_said_once_and_changes_nothing(tmp_path, monkeypatch):
    write_project(tmp_path)
    render(tmp_path, 2, monkeypatch)
    before = tree(tmp_path / "output")
    child_image = load_project([tmp_path / "specs"], tmp_path).order()[1]
    broken = tmp_path / "specs" / "tpl" / "family"
    broken.mkdir(parents=True)
    (broken / "apt.j2").write_text('{% extends "bundled/family/apt.j2" %}{% block labels %}{{ 1 // 0 }}{% endblock %}')
    spec = tmp_path / "specs" / f"{child_image}.yaml"
    spec.write_text(spec.read_text().replace("v0", "v1") + "templates: tpl\n")
    with pytest.raises(SpecError) as info:
        render(tmp_path, 2, monkeypatch)
    assert [d.file for d in info.value.diagnostics] == [f"specs/{child_image}.yaml"], info.value.diagnostics
    assert tree(tmp_path / "output") == before
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_a_spec_error_is_said_once_though_every_process_finds_it(tmp_path, monkeypatch):
    write_project(tmp_path)
    (tmp_path / "specs" / "img2.yaml").write_text((tmp_path / "specs" / "img2.yaml").read_text() + "rootfs: [nope]\n")
    with pytest.raises(SpecError) as info:
        render(tmp_path, 3, monkeypatch)
    assert len([d for d in info.value.diagnostics if d.severity == "error"]) == 1, info.value.diagnostics
    assert not (tmp_path / "output").exists()


def test_a_child_that_cannot_write_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    write_project(tmp_path)
    render(tmp_path, 2, monkeypatch)
    before = tree(tmp_path / "output")
    write_project(tmp_path, "v1")
    parent = os.getpid()
    real = Stager._stage

    def full_disk_in_the_child(self, *args):
        if os.getpid() != parent:
            raise OSError(28, "No space left on device")
        return real(self, *args)

    monkeypatch.setattr(Stager, "_stage", full_disk_in_the_child)
    with pytest.raises(GenError, match=r"cannot write .*output: \[Errno 28\] No space left on device; output/ is as"):
        render(tmp_path, 2, monkeypatch)
    assert tree(tmp_path / "output") == before
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_a_child_killed_midway_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    write_project(tmp_path)
    render(tmp_path, 2, monkeypatch)
    before = tree(tmp_path / "output")
    write_project(tmp_path, "v1")
    parent = os.getpid()
    real = Stager.add

    def killed_in_the_child(self, image):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, image)

    monkeypatch.setattr(Stager, "add", killed_in_the_child)
    with pytest.raises(GenError, match="a forked gen process ended without an answer .exit status -9."):
        render(tmp_path, 2, monkeypatch)
    assert tree(tmp_path / "output") == before


def test_an_interrupt_in_the_parent_ends_the_children_and_changes_nothing(tmp_path, monkeypatch):
    write_project(tmp_path)
    render(tmp_path, 2, monkeypatch)
    before = tree(tmp_path / "output")
    write_project(tmp_path, "v1")
    children: list[int] = []
    real = shards.Forked.answer

    def interrupted(self):
        children.append(self.pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(shards.Forked, "answer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render(tmp_path, 2, monkeypatch)
    monkeypatch.setattr(shards.Forked, "answer", real)
    assert children and all(not Path(f"/proc/{pid}").exists() for pid in children), "children reaped"
    assert tree(tmp_path / "output") == before
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_the_memo_sees_a_file_only_a_child_read(tmp_path, monkeypatch):
    """The CLI's render on two processes, then a change to an overlay file of an image in the
    child's share: the next render must not answer from the memo."""
    from generator.cli import main

    write_project(tmp_path)
    monkeypatch.setattr(shards, "_process_count", lambda images: 2)
    child_image = load_project([tmp_path / "specs"], tmp_path).order()[1]

    def gen(*args: str) -> int:
        with CliRunner().isolation(), pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["gen", *args, "-C", str(tmp_path)])
            try:
                main()
            except SystemExit as exc:
                return int(exc.code or 0)
        return 0

    assert gen("render") == 0
    (tmp_path / "specs" / f"overlay{child_image[3:]}" / "etc" / "app.conf").write_text("image=new\n")
    assert gen("render") == 0
    assert b"image=new" in b"".join(data for data, _ in tree(tmp_path / "output" / child_image).values())


def test_small_projects_render_in_one_process():
    assert shards._process_count(shards.SHARD_MIN_IMAGES - 1) == 1
    assert shards._process_count(10_000) == min(len(os.sched_getaffinity(0)), MAX_PROCESSES)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing is forked")
def test_a_check_on_every_core_says_what_one_process_says(tmp_path, monkeypatch):
    """`gen render --check` compares each image in the process that rendered it; the diff comes
    back in build order, a change only a child read is in it, and errors are said once."""
    from generator.render import image_diff, stale_diff
    from generator.render.project import render_project

    write_project(tmp_path)
    render(tmp_path, 1, monkeypatch)
    (tmp_path / "specs" / "overlay1" / "etc" / "app.conf").write_text("image=changed\n")  # a child's image
    (tmp_path / "specs" / "img4.yaml").write_text((tmp_path / "specs" / "img4.yaml").read_text().replace("v0", "v4"))
    (tmp_path / "output" / "img3").rename(tmp_path / "output" / "gone")  # a stale folder, and a missing one
    project = load_project([tmp_path / "specs"], tmp_path)
    one_process = render_project(project).images
    alone = "".join(image_diff(tmp_path / "output", i) for i in one_process) + stale_diff(
        tmp_path / "output", {i.name for i in one_process}
    )
    monkeypatch.setattr(shards, "SHARD_MIN_IMAGES", 2)
    warnings, diff = shards.check_output(project, None, tmp_path / "output", prune=True)
    assert diff == alone and warnings == []
    assert diff.index("output/img1/") < diff.index("output/img3/") < diff.index("output/img4/") < diff.index("gone")
    (tmp_path / "specs" / "img5.yaml").write_text(
        "name: img5\ntags: [a]\n" + BASE + "init: {kind: none}\nsysctls: {values: {vm.swappiness: 10}}\n"
    )
    with pytest.raises(SpecError) as failed:
        shards.check_output(load_project([tmp_path / "specs"], tmp_path), None, tmp_path / "output", prune=True)
    assert [d.message.split(" is ")[0] for d in failed.value.diagnostics] == ["vm.swappiness"], "said once"
