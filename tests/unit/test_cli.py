"""The `gen` command line as users run it: exit codes, messages, and that bad input changes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def gen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "generator", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    return tmp_path


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_render_is_deterministic_and_check_passes_then_fails_with_a_diff(project):
    assert gen("render", cwd=project).returncode == 0
    first = snapshot(project / "output")
    shutil.rmtree(project / "output")
    assert gen("render", cwd=project).returncode == 0
    assert snapshot(project / "output") == first
    assert gen("render", "--check", cwd=project).returncode == 0
    spec = project / "specs" / "runtime.yaml"
    spec.write_text(spec.read_text().replace("procps", "procps\n  - less"))
    check = gen("render", "--check", cwd=project)
    assert check.returncode == 1
    assert "+        less \\" in check.stdout + check.stderr
    assert snapshot(project / "output") == first  # --check writes nothing


def test_broken_spec_exits_2_prints_every_problem_and_changes_nothing(project):
    assert gen("render", cwd=project).returncode == 0
    before = snapshot(project / "output")
    spec = project / "specs" / "app-base.yaml"
    spec.write_text(spec.read_text().replace("uid: 1000", "uidd: 1000").replace("keep: 3", "keep: x") + "tagz: [x]\n")
    result = gen("render", cwd=project)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("specs/app-base.yaml:" in line and "$.users[0].uidd: unknown field 'uidd'" in line for line in lines)
    assert any("$.tagz: unknown field 'tagz'" in line for line in lines)
    assert "did you mean 'tags'?" in result.stderr
    assert snapshot(project / "output") == before


def test_validate_runs_no_template_and_render_runs_them_sandboxed(project):
    """A spec's template directory is code from the repository: validate never runs it, and render
    refuses what would reach Python (issue 20)."""
    marker = project / "escaped"
    (project / "specs" / "tpl" / "features").mkdir(parents=True)
    (project / "specs" / "tpl" / "features" / "env.j2").write_text(
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}\n"
    )
    spec = project / "specs" / "runtime.yaml"
    spec.write_text(spec.read_text() + "templates: tpl\n")
    validated = gen("validate", cwd=project)
    assert validated.returncode == 0, validated.stderr
    rendered = gen("render", cwd=project)
    assert rendered.returncode == 2 and "features/env.j2:1" in rendered.stderr and "unsafe" in rendered.stderr
    assert "Traceback" not in rendered.stderr and not marker.exists()
    assert not (project / "output" / "runtime").exists(), "a failed render writes nothing"


def test_validate_graph_and_schema(project):
    result = gen("validate", cwd=project)
    assert result.returncode == 0 and "debian-s6, runtime, app-base" in result.stdout
    graph = json.loads(gen("graph", "--format", "json", cwd=project).stdout)
    assert [n["name"] for n in graph["nodes"]] == ["debian-s6", "runtime", "app-base"]
    assert "digraph" in gen("graph", "--format", "dot", cwd=project).stdout
    schema = json.loads(gen("schema", cwd=project).stdout)
    assert schema["$schema"].endswith("2020-12/schema")


def test_new_writes_a_spec_that_validates_and_refuses_to_overwrite(project):
    assert gen("new", "myapp", "--extends", "runtime", cwd=project).returncode == 0
    text = (project / "specs" / "myapp.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    assert gen("validate", cwd=project).returncode == 0
    again = gen("new", "myapp", cwd=project)
    assert again.returncode == 2 and "--force" in again.stderr


def test_usage_errors_exit_2(project):
    assert gen("render", "--no-such-flag", cwd=project).returncode == 2
    assert gen("render", "specs/missing.yaml", cwd=project).returncode == 2
    assert gen("hints", "no-such-image", cwd=project).returncode == 2


def test_layer_cache_options_are_checked_before_anything_builds(project):
    assert gen("render", cwd=project).returncode == 0
    remote = gen(
        "build", "--dry-run", "--layer-cache", "registry.example.com/team/cache", "--insecure-registry", cwd=project
    )
    assert remote.returncode == 2 and "loopback" in remote.stderr
    alone = gen("build", "--dry-run", "--insecure-registry", cwd=project)
    assert alone.returncode == 2 and "--layer-cache" in alone.stderr
    no_repo = gen("build", "--dry-run", "--layer-cache", "127.0.0.1:5000", cwd=project)
    assert no_repo.returncode == 2 and "name a repository" in no_repo.stderr.replace("\n", " ")


def test_version_and_help(project):
    assert gen("--version", cwd=project).stdout.startswith("gen ")
    assert gen("-V", cwd=project).stdout == gen("--version", cwd=project).stdout
    for command in ("render", "validate", "graph", "schema", "new", "build", "hints", "verify", "rebuild"):
        result = gen(command, "--help", cwd=project)
        assert result.returncode == 0 and "Usage" in result.stdout, command
        assert "<bool>" not in result.stdout, f"{command}: a flag shows a type as if it took a value"


def test_hints_flags_are_one_shell_line(project):
    result = gen("hints", "app-base", "--flags", cwd=project)
    assert result.returncode == 0
    assert result.stdout.split() == ["--sysctl=kernel.msgmax=65536", "--sysctl=kernel.shmmax=68719476736"]


def test_hints_flags_keep_a_multi_word_sysctl_one_argument_in_a_shell(project):
    spec = project / "specs" / "app-base.yaml"
    spec.write_text(spec.read_text().replace("  values:\n", '  values:\n    kernel.sem: "250 32000 32 128"\n', 1))
    flags = gen("hints", "app-base", "--flags", cwd=project)
    assert flags.returncode == 0, flags.stderr
    argv = subprocess.run(
        ["sh", "-c", f"eval \"printf '%s\\n' {flags.stdout.strip()}\""], capture_output=True, text=True, timeout=10
    ).stdout.splitlines()
    assert "--sysctl=kernel.sem=250 32000 32 128" in argv and len(argv) == 3, argv


def test_hints_of_a_non_root_image_let_the_runtime_own_its_volumes(project):
    import json

    hints = json.loads(gen("hints", "app-base", "--json", cwd=project).stdout)
    assert "--volume=<host-dir>:/data:U" in hints["run_flags"]
    context = hints["kubernetes"]["securityContext"]
    assert (context["runAsNonRoot"], context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (
        True,
        1000,
        1000,
        1000,
    )
    runtime = json.loads(gen("hints", "runtime", "--json", cwd=project).stdout)["kubernetes"]["securityContext"]
    assert runtime["runAsUser"] == 65532 and "fsGroup" not in runtime  # no volume to share


def test_bracketed_text_in_errors_is_printed_not_taken_for_markup(monkeypatch):
    import io

    from rich.console import Console

    import generator.cli as cli
    from generator.errors import Diagnostic

    buffer = io.StringIO()
    # A console of its own: the shared one keeps following sys.stderr for the other tests.
    monkeypatch.setattr(cli, "err", Console(file=buffer, highlight=False, soft_wrap=True))
    cli.print_diagnostics(
        [Diagnostic("specs/a.yaml", 1, 2, "$.x", "copy containers-storage:[overlay@/s+/r]img", "see [bold]this[/bold]")]
    )
    assert "containers-storage:[overlay@/s+/r]img" in buffer.getvalue()
    assert "[bold]this[/bold]" in buffer.getvalue()


def test_every_reporting_command_spells_json_output_the_same(project):
    """--json on validate, render, render --check, graph and build --dry-run: one JSON document on
    stdout; --format json still works where it did (graph, build) for existing scripts."""
    valid = gen("validate", "--json", cwd=project)
    assert valid.returncode == 0 and json.loads(valid.stdout)["valid"] == ["debian-s6", "runtime", "app-base"]
    rendered = json.loads(gen("render", "--json", cwd=project).stdout)
    assert "runtime/Dockerfile" in rendered["written"] and rendered["removed"] == []
    check = gen("render", "--check", "--json", cwd=project)
    assert check.returncode == 0 and json.loads(check.stdout)["up_to_date"] is True
    (project / "output" / "runtime" / "Dockerfile").write_text("stale\n")
    stale = gen("render", "--check", "--json", cwd=project)
    assert stale.returncode == 1 and "stale" in json.loads(stale.stdout)["diff"]
    assert gen("render", cwd=project).returncode == 0
    graph = json.loads(gen("graph", "--json", cwd=project).stdout)
    assert graph == json.loads(gen("graph", "--format", "json", cwd=project).stdout)
    assert ["debian-s6", "runtime"] in graph["edges"]
    for spelling in (["--json"], ["--format", "json"]):
        plan = gen("build", "--dry-run", *spelling, cwd=project)
        assert plan.returncode == 0, plan.stderr
        assert json.loads(plan.stdout)


def test_lock_update_reports_as_json(tmp_path):
    """`gen lock --update --json`: one JSON document on stdout, as every reporting command gives."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "output").mkdir()
    first = gen("lock", "--update", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"lock": "gen.lock", "changed": True, "images": [], "reports": []}
    again = json.loads(gen("lock", "--update", "--json", cwd=tmp_path).stdout)
    assert again["changed"] is False and json.loads(gen("lock", "--json", cwd=tmp_path).stdout)["images"] == {}
