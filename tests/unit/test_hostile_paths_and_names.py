"""Hostile paths and names: too long for the file system, trees too deep to recurse, special
files, control characters, names gen cannot use. Each is refused with one clear `error:` line
(a spec error's with its hint), exit 2; never a traceback, a hang, or an escape sequence sent to
the terminal; nothing changes on disk."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from generator.errors import Diagnostic, SpecError
from generator.files import MAX_TREE_DEPTH, first_link
from generator.spec.yamlfile import read_spec_file
from tests.hostile import run_gen, snapshot

ROOT = Path(__file__).resolve().parents[2]
LONG = "a" * 300  # one name past the 255 bytes a file system allows


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "p" / "specs")
    return tmp_path / "p"


@pytest.fixture
def alarm():
    """A test that would hang fails instead (a blocking open is interrupted by the signal)."""

    def ring(signum, frame):
        raise TimeoutError("gen hung")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "-C", "{long}"],
        ["render", "-C", "{long}"],
        ["graph", "-C", "{long}"],
        ["hints", "x", "-C", "{long}"],
        ["new", "x", "-C", "{long}"],
        ["images", "-C", "{long}"],
        ["validate", "{project}/specs/{name}.yaml", "-C", "{project}"],
        ["render", "--templates", "{long}", "-C", "{project}"],
        ["s6-overlay", "add-version", "3.2.9.9", "--sums-from", "{long}", "-C", "{project}"],
    ],
)
def test_a_path_too_long_for_the_file_system_is_one_line(project, args):
    before = snapshot(project.parent)
    values = {"long": str(project / LONG), "project": str(project), "name": LONG}
    code, _, err = run_gen([a.format(**values) for a in args])
    assert "File name too long" in one_error_line(code, err)
    assert snapshot(project.parent) == before


@pytest.mark.parametrize("name, said", [("a" * 200, "at most 128 characters"), ("rootfs-x", "reserved")])
def test_new_refuses_a_name_it_cannot_use_in_one_line_and_writes_nothing(project, name, said):
    before = snapshot(project)
    code, _, err = run_gen(["new", name, "-C", str(project)])
    line = one_error_line(code, err)
    assert said in line and "NAME" in line
    assert snapshot(project) == before


def nest(top: Path, depth: int, name: str) -> Path:
    """depth directories, one in the other, made relative to each other's descriptor (a path
    this long cannot be made by name)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            fd, old = os.open(name, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
    finally:
        os.close(fd)
    return top


def unnest(top: Path, name: str) -> None:
    """Remove what nest made, bottom up without recursion (shutil.rmtree recurses per level)."""
    fds = [os.open(top, os.O_RDONLY)]
    while name in os.listdir(fds[-1]):
        fds.append(os.open(name, os.O_RDONLY, dir_fd=fds[-1]))
    os.close(fds.pop())
    while fds:
        os.rmdir(name, dir_fd=fds[-1])
        os.close(fds.pop())


@pytest.fixture
def deep_trees():
    """Removes the trees a test nested (pytest's own clean-up would recurse through them)."""
    made: list[tuple[Path, str]] = []
    yield made
    for top, name in made:
        if (top / name).exists():
            unnest(top, name)


def test_first_link_finds_a_deep_link_first_by_path_and_refuses_a_tree_too_deep(tmp_path, deep_trees):
    deep_trees.append((tmp_path / "a", "d"))
    nest(tmp_path / "a", MAX_TREE_DEPTH - 1, "d")
    assert first_link(tmp_path) is None
    (tmp_path / "b").symlink_to("/etc")
    bottom = tmp_path.joinpath("a", *["d"] * (MAX_TREE_DEPTH - 1))
    (bottom / "link").symlink_to("/etc")
    assert first_link(tmp_path) == bottom / "link"  # a/d/.../link sorts before b
    (bottom / "link").unlink()
    nest(bottom, 2, "d")
    with pytest.raises(SpecError, match=f"more than {MAX_TREE_DEPTH} directories deep"):
        first_link(tmp_path)


def test_first_link_refuses_a_tree_longer_than_a_path_may_be(tmp_path, deep_trees):
    deep_trees.append((tmp_path, "x" * 30))
    nest(tmp_path, 150, "x" * 30)
    with pytest.raises(SpecError, match="File name too long"):
        first_link(tmp_path)


@pytest.mark.parametrize("command", [["validate"], ["render"], ["render", "--check"]])
@pytest.mark.parametrize(
    "depth, name, said", [(150, "x" * 30, "File name too long"), (MAX_TREE_DEPTH + 1, "d", "directories deep")]
)
def test_a_deep_overlay_or_output_folder_is_refused_not_a_traceback(project, deep_trees, command, depth, name, said):
    overlay, image = project / "specs" / "overlays" / "app-base" / "etc", project / "output" / "runtime"
    deep_trees += [(overlay, name), (image, name)]
    nest(overlay, depth, name)
    code, _, err = run_gen([*command, "-C", str(project)])
    assert code == 2 and "Traceback" not in err and said in err, err
    unnest(overlay, name)
    assert run_gen(["render", "-C", str(project)])[0] == 0
    nest(image, depth, name)
    code, _, err = run_gen([*command, "-C", str(project)])
    assert code in ((0, 2) if command == ["validate"] else (2,)) and "Traceback" not in err, err


def test_a_fifo_or_device_as_a_spec_is_refused_without_reading_it(project, alarm):
    fifo = project / "specs" / "x.yaml"
    os.mkfifo(fifo)
    code, _, err = run_gen(["validate", str(fifo), "-C", str(project)])
    assert "not a regular file" in one_error_line(code, err)
    spec, problems = read_spec_file(fifo, "specs/x.yaml")
    assert spec is None and "not a regular file" in problems[0].message
    spec, problems = read_spec_file(Path("/dev/zero"), "zero.yaml")  # st_size 0, and endless
    assert spec is None and "not a regular file" in problems[0].message
    code, out, err = run_gen(["validate", "-C", str(project)])  # inside specs/: not a spec, skipped
    assert code == 0, err


def test_a_spec_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    import generator.spec.yamlfile as yamlfile

    monkeypatch.setattr(yamlfile, "MAX_SPEC_BYTES", 10)
    big = tmp_path / "big.yaml"
    big.write_text("name: " + "x" * 100 + "\n")
    spec, problems = read_spec_file(big, "big.yaml")
    assert spec is None and "at most 10" in problems[0].message


def test_control_characters_are_escaped_in_every_part_of_an_error():
    from generator.errors import printable

    d = Diagnostic("specs/a\nb.yaml", 1, 7, "$.\x1b[31mk\x07", "bad\u202evalue\x9b", "fix\rit")
    text = d.format()
    assert text == "specs/a\\nb.yaml:1:7: $.\\x1b[31mk\\x07: bad\\u202evalue\\x9b\n  hint: fix\\rit"
    assert printable("plain text, ü and 😀 stay") == "plain text, ü and 😀 stay"


def test_a_file_name_and_a_key_with_control_characters_print_on_one_line(project):
    (project / "specs" / "a\nb.yaml").write_text("name: x\n")
    (project / "specs" / "y.yaml").write_text('name: y\ntags: [a]\n"\\e[31mk\\x07": 1\n')
    code, _, err = run_gen(["validate", "-C", str(project)])
    assert code == 2
    assert "\x1b" not in err and "\x07" not in err
    for line in err.splitlines():
        assert line.startswith(("error: ", "  hint: ")) or line.endswith("nothing was changed."), line
    assert "specs/a\\nb.yaml:1:7" in err and "$.\\x1b[31mk\\x07: unknown field" in err


@pytest.mark.parametrize(
    "text, said, not_said",
    [
        ("name: 2001-12-14\ntags: [a]\n", "quote", "reserved"),
        ("---\n", "empty", "NoneType"),
        ("? [a,b]: 1\nname: y\ntags: [a]\n", "not a string", "None"),
    ],
)
def test_confusing_values_get_a_plain_message(project, text, said, not_said):
    (project / "specs" / "y.yaml").write_text(text)
    code, _, err = run_gen(["validate", str(project / "specs" / "y.yaml"), "-C", str(project)])
    assert code == 2 and "Traceback" not in err
    assert said in err
    assert not any(not_said in line for line in err.splitlines() if line.startswith("error: ")), err


@pytest.mark.parametrize("command", [["render"], ["render", "--check"], ["validate"]])
def test_an_overlay_file_whose_name_is_not_utf8_is_named_where_it_is(project, command):
    """Image layers want UTF-8 names: the overlay's own path is named, with the fix (not the
    build context's path and a hint to fix a template)."""
    bad = project / "specs" / "overlays" / "app-base" / "etc" / os.fsdecode(b"bad\xff")
    bad.write_bytes(b"x")
    before = snapshot(project)
    code, _, err = run_gen([*command, "-C", str(project)])
    if command == ["validate"]:
        assert code == 0, err  # validate reads no overlay file: it checks the specs
        return
    assert code == 2 and "Traceback" not in err, err
    assert "specs/overlays/app-base/etc/bad\\xff: the file name is not UTF-8" in err and "template" not in err, err
    assert snapshot(project) == before


def test_thousands_of_errors_print_the_first_ones_and_the_count(project):
    """A list of aliases expands to one error per item: 23,000 of them took 5 s to print and buried
    the first; the first SHOWN_DIAGNOSTICS are printed, then how many more, then the count."""
    from generator.cli import SHOWN_DIAGNOSTICS

    items = ", ".join(["*s"] * 1000)
    spec = project / "specs" / "runtime.yaml"
    spec.write_text(spec.read_text() + f"rootfs: [&s missing-dir, {items}]\n")
    code, _, err = run_gen(["validate", "-C", str(project)])
    assert code == 2 and "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert len([line for line in lines if line.startswith("error: ")]) == SHOWN_DIAGNOSTICS
    assert (
        lines[-2] == f"... and {1001 - SHOWN_DIAGNOSTICS} more not shown (the first ones above; fix them and run again)"
    )
    assert lines[-1] == "1001 error(s); nothing was changed."


def test_a_tools_stderr_keeps_its_lines_and_a_names_newline_does_not(capsys):
    """A tool's stderr is several lines of its own (warnings, then the error): kept; a newline
    inside a name in any other error is escaped, so the error stays one line."""
    from generator.builder.proc import ToolError
    from generator.cli.options import error_exit
    from generator.errors import UsageError

    assert error_exit(ToolError("podman failed (exit 125): WARN[0000] one\nError: two\x1b")).exit_code == 1
    assert capsys.readouterr().err == "error: podman failed (exit 125): WARN[0000] one\nError: two\\x1b\n"
    assert error_exit(UsageError("specs/a\nb.yaml: bad")).exit_code == 2
    assert capsys.readouterr().err == "error: specs/a\\nb.yaml: bad\n"


def test_spaces_and_joiners_of_other_scripts_are_text_not_escapes():
    from generator.errors import printable

    text = "日本\u3000語, nb\xa0sp, 👩\u200d💻, می\u200cخواهم"
    assert printable(text) == text
    assert printable("a\u2028b\u2066c") == "a\\u2028b\\u2066c"
