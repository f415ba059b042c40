"""The render memo: a validate or render with nothing changed repeats the last answer without
loading a spec, and any change to what the last run read or wrote makes the next one run in full."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import generator.spec
from generator import memo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "project" / "specs")
    (tmp_path / "project" / "specs" / "tpl").mkdir()
    return tmp_path / "project"


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the CLI loaded the specs (a memo hit loads none)."""
    calls: list[int] = []
    real = generator.spec.load_project

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(generator.spec, "load_project", counting)
    return calls


def gen(project: Path, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `gen ARGS -C project`, run in this process (so the test
    sees whether the specs were loaded) through the CLI's own entry point."""
    from generator.cli import main

    with CliRunner().isolation() as (stdout, stderr, _), pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["gen", *args, "-C", str(project)])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, stdout.getvalue().decode(), stderr.getvalue().decode()


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_nothing_changed_repeats_every_answer_without_loading_a_spec(project, loads):
    with (project / "specs" / "runtime.yaml").open("a") as spec:
        spec.write("sysctls:\n  values:\n    vm.swappiness: 10\n  node_level: warn\n")
    first = gen(project, "render")
    rendered = snapshot(project / "output")
    assert first[0] == 0 and len(loads) == 1
    again = gen(project, "render")
    assert again[0] == 0 and len(loads) == 1, "an unchanged project was loaded again"
    assert [line.split(" (")[0] for line in again[1].splitlines()] == [
        line.split(" (")[0] for line in first[1].splitlines()
    ]
    assert all(line.endswith("(unchanged)") for line in again[1].splitlines())
    assert first[2].count("warning:") == 1, "a parent's warning is said once, not again for each child"
    assert again[2] == first[2], "the warnings are printed again, the same"
    assert gen(project, "render", "--check")[:2] == (0, "output/ is up to date for 3 image(s).\n")
    valid = gen(project, "validate")
    assert valid[0] == 0 and valid[1].startswith("3 spec(s) valid: debian-s6, runtime, app-base")
    as_json = json.loads(gen(project, "validate", "--json")[1])
    assert as_json["valid"] == ["debian-s6", "runtime", "app-base"] and as_json["warnings"]
    assert len(loads) == 1 and snapshot(project / "output") == rendered
    assert (project / ".gen" / ".gitignore").read_text().endswith("\n*\n"), "git never sees gen's state"


def _edit_spec(project: Path) -> None:
    spec = project / "specs" / "runtime.yaml"
    spec.write_text(spec.read_text() + "description: changed\n")


def _add_overlay_file(project: Path) -> None:
    (project / "specs" / "overlays" / "app-base" / "etc" / "new-file").write_text("new\n")


def _make_overlay_file_executable(project: Path) -> None:
    (project / "specs" / "overlays" / "app-base" / "etc" / "app-base" / "motd").chmod(0o755)


def _add_sums_table(project: Path) -> None:
    (project / "s6-overlay-checksums.json").write_text("{}\n")


def _add_parent_dir_link(project: Path) -> None:
    """The overlay directory becomes a link to the same files moved elsewhere in the project."""
    overlay = project / "specs" / "overlays" / "app-base"
    overlay.rename(project / "elsewhere")
    overlay.symlink_to(Path("../../../elsewhere"))


def _edit_output_at_once(project: Path) -> None:
    """Same size, written right after the render: only a later mtime or inode can tell."""
    dockerfile = project / "output" / "runtime" / "Dockerfile"
    text = dockerfile.read_text()
    dockerfile.write_text(text.replace("FROM", "FRUM", 1))


def _remove_output_file(project: Path) -> None:
    (project / "output" / "runtime" / ".dockerignore").unlink()


def _use_user_template(project: Path) -> None:
    spec = project / "specs" / "runtime.yaml"
    spec.write_text(spec.read_text() + "templates: tpl\n")


def _edit_user_template(project: Path) -> None:
    (project / "specs" / "tpl" / "dockerignore.j2").write_text("*\n# mine\n")


@pytest.mark.parametrize(
    "change",
    [
        _edit_spec,
        _add_overlay_file,
        _make_overlay_file_executable,
        _add_sums_table,
        _add_parent_dir_link,
        _edit_output_at_once,
        _remove_output_file,
    ],
)
def test_any_change_to_what_render_read_or_wrote_runs_it_in_full(project, loads, change: Callable[[Path], None]):
    assert gen(project, "render")[0] == 0
    change(project)
    code, _out, err = gen(project, "render")
    assert len(loads) == 2, f"{change.__name__}: the memo answered"
    fresh = project.parent / "fresh"
    shutil.copytree(project / "specs", fresh / "specs", symlinks=True)
    if (project / "s6-overlay-checksums.json").exists():
        shutil.copy(project / "s6-overlay-checksums.json", fresh)
    if (project / "elsewhere").exists():
        shutil.copytree(project / "elsewhere", fresh / "elsewhere")
    fresh_code = gen(fresh, "render")[0]
    assert code == fresh_code, err  # the same answer a first render of the changed project gives
    if code == 0:
        assert snapshot(project / "output") == snapshot(fresh / "output")


def test_a_user_template_is_an_input_too(project, loads):
    _use_user_template(project)
    (project / "specs" / "tpl" / "dockerignore.j2").write_text("*\n")
    assert gen(project, "render")[0] == 0
    assert gen(project, "render")[0] == 0 and len(loads) == 1
    _edit_user_template(project)
    assert gen(project, "render")[0] == 0 and len(loads) == 2
    assert (project / "output" / "runtime" / ".dockerignore").read_text() == "*\n# mine\n"


def test_another_gen_or_another_checkout_never_reuses_a_record(project, loads, monkeypatch):
    assert gen(project, "validate")[0] == 0
    with monkeypatch.context() as patched:
        patched.setattr(memo, "gen_sha256", lambda: "another gen")
        assert gen(project, "validate")[0] == 0 and len(loads) == 2
    assert gen(project, "validate")[0] == 0 and len(loads) == 3  # the other gen's record replaced this one's
    assert gen(project, "validate")[0] == 0 and len(loads) == 3
    # A copy of the project (a memo committed to a repository, or another machine's) has a key
    # file with another inode and ctime: its records are never trusted.
    copy = project.parent / "copy"
    shutil.copytree(project, copy)
    assert gen(copy, "validate")[0] == 0 and len(loads) == 4


def test_a_failed_run_writes_no_state_and_a_linked_state_dir_is_never_used(project, tmp_path_factory):
    spec = project / "specs" / "runtime.yaml"
    original = spec.read_text()
    spec.write_text(original + "tagz: [x]\n")
    assert gen(project, "validate")[0] == 2
    assert not (project / ".gen").exists(), "bad input changed nothing, not even gen's state"
    spec.write_text(original)
    outside = tmp_path_factory.mktemp("outside")
    (project / ".gen").symlink_to(outside)
    assert gen(project, "validate")[0] == 0 and gen(project, "validate")[0] == 0
    assert list(outside.iterdir()) == [], "nothing was written through the link"


def test_a_record_naming_files_outside_the_project_is_not_trusted(project):
    assert gen(project, "validate")[0] == 0
    record_file = project / memo.MEMO_FILE
    data = json.loads(record_file.read_text())
    [record] = data["records"].values()
    record["files"].append("/etc/hostname")
    record_file.write_text(json.dumps(data))
    assert memo.Memo(project).lookup(next(iter(data["records"]))) is None


def test_an_audit_hook_sees_reads_and_listings_but_not_writes(tmp_path):
    (tmp_path / "read").write_text("x")
    with memo.recording() as (files, dirs):
        (tmp_path / "read").read_text()
        (tmp_path / "written").write_text("y")
        os.listdir(tmp_path)
        list(tmp_path.rglob("*"))
    assert str(tmp_path / "read") in files and str(tmp_path / "written") not in files
    assert str(tmp_path) in dirs


def test_an_event_the_hook_cannot_read_fails_nothing_and_the_run_is_not_recorded(project):
    with memo.recording() as reads:
        sys.audit("open", "not the three arguments open events carry")
        (project / "specs" / "runtime.yaml").read_text()
    store = memo.Memo(project)
    store.store("k", reads, memo.Outcome(("x",), ()), None)
    assert "k" not in store.records


def test_a_render_that_replaced_a_folder_is_remembered(project, loads):
    """Deleting the replaced folders opens each of their directories by a name relative to its
    parent (shutil.rmtree's safe walk): gen's own clean-up is not an input, and was once taken
    for a read outside the project, so no render that changed output/ was ever remembered."""
    assert gen(project, "render")[0] == 0
    spec = project / "specs" / "runtime.yaml"
    spec.write_text(spec.read_text().replace("description: debian-s6 with", "description: changed, with"))
    assert gen(project, "render")[0] == 0 and len(loads) == 2
    again = gen(project, "render")
    assert again[0] == 0 and len(loads) == 2, "the render after a change was not remembered"
    assert all(line.endswith("(unchanged)") for line in again[1].splitlines())
