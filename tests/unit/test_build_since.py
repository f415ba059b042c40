"""`--since REV`: changed specs, overlays, output dirs or templates select images and dependents."""

import subprocess

import pytest

from generator.builder.outputs import load_outputs
from generator.builder.since import affected_images, changed_paths
from generator.errors import UsageError
from tests.conftest import rehash_output_dir


def git(root, *args):
    subprocess.run(
        ["git", "-C", str(root), *args],
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
            "PATH": "/usr/bin:/bin",
            "HOME": str(root),
        },
    )


@pytest.fixture
def repo(tmp_path, write_output):
    root = tmp_path / "project"
    out = root / "output"
    write_output(out, "base", "RUN true\n")
    write_output(out, "mid", "RUN true\n", parent="base")
    write_output(out, "leaf", "RUN true\n", parent="mid")
    write_output(out, "side", "RUN true\n", parent="base")
    for name in ("base", "mid", "leaf", "side"):
        (root / "specs" / "overlays" / name).mkdir(parents=True)
        (root / "specs" / "overlays" / name / "f").write_text("1\n")
        (root / "specs" / f"{name}.yaml").write_text(f"name: {name}\n")
    (root / "templates").mkdir()
    (root / "templates" / "Dockerfile.j2").write_text("x\n")
    (root / "README").write_text("r\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "start")
    git(root, "tag", "start")
    return root


def commit(root, path, text):
    (root / path).write_text(text)
    git(root, "commit", "-q", "-am", f"change {path}")


def selected(root):
    return affected_images(load_outputs(root / "output"), changed_paths(root, "start"))


def test_nothing_changed(repo):
    assert selected(repo) == set()


def test_unrelated_file_selects_nothing(repo):
    commit(repo, "README", "r2\n")
    assert selected(repo) == set()


def test_overlay_of_middle_selects_it_and_dependents(repo):
    commit(repo, "specs/overlays/mid/f", "2\n")
    assert selected(repo) == {"mid", "leaf"}


def test_spec_change_selects_its_subtree(repo):
    commit(repo, "specs/side.yaml", "name: side\n# x\n")
    assert selected(repo) == {"side"}
    commit(repo, "specs/base.yaml", "name: base\n# x\n")
    assert selected(repo) == {"base", "mid", "leaf", "side"}


def test_rendered_output_change_selects_image(repo):
    (repo / "output/leaf/Dockerfile").write_text("changed\n")
    rehash_output_dir(repo / "output/leaf")  # as a re-render would
    git(repo, "commit", "-q", "-am", "re-render leaf")
    assert selected(repo) == {"leaf"}


def test_template_change_selects_all(repo):
    commit(repo, "templates/Dockerfile.j2", "y\n")
    assert selected(repo) == {"base", "mid", "leaf", "side"}


def test_bad_revision_is_bad_input(repo):
    with pytest.raises(UsageError, match="no-such-rev"):
        changed_paths(repo, "no-such-rev")
