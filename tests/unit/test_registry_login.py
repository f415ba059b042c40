"""`gen login` (issue 24): a CI job logs in to the registry from its variables, the password on
skopeo's stdin, never on a command line or in output; GEN_INSECURE_REGISTRY stands for the flag,
loopback only; both emitted pipelines log in before any registry call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

from generator.publish.skopeo import ci_credentials
from tests.unit.test_ci_emit import _pipelines

PASSWORD = "s3cret-Pa55word"


def test_credentials_come_from_gens_variables_or_gitlabs_for_its_own_registry():
    gen_vars = {"GEN_REGISTRY_USER": "bot", "GEN_REGISTRY_PASSWORD": PASSWORD}
    gitlab = {"CI_REGISTRY": "registry.gitlab.com", "CI_REGISTRY_USER": "gitlab-ci-token", "CI_REGISTRY_PASSWORD": "t"}
    assert ci_credentials(gen_vars, "ghcr.io") == ("bot", PASSWORD, "GEN_REGISTRY_USER/GEN_REGISTRY_PASSWORD")
    assert ci_credentials(gitlab, "registry.gitlab.com") == (
        "gitlab-ci-token",
        "t",
        "CI_REGISTRY_USER/CI_REGISTRY_PASSWORD",
    )
    assert ci_credentials(gitlab, "quay.io") is None  # GitLab's token is for its own registry only
    assert ci_credentials({**gitlab, **gen_vars}, "registry.gitlab.com")[0] == "bot"  # the user's own first
    assert ci_credentials({"GEN_REGISTRY_USER": "bot"}, "ghcr.io") is None  # no password: no login


def _fake_skopeo(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH with a skopeo that records its arguments and stdin (and fails for user 'wrong')."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record.json"
    bin_dir.mkdir()
    (bin_dir / "skopeo").write_text(
        f"#!{sys.executable}\nimport json, sys\nstdin = sys.stdin.read()\n"
        f"json.dump({{'argv': sys.argv[1:], 'stdin': stdin}}, open({str(record)!r}, 'w'))\n"
        "if 'wrong' in sys.argv:\n"
        "    print('Error: authenticating creds for 127.0.0.1:5000: invalid username/password: ' + stdin,"
        " file=sys.stderr)\n    sys.exit(1)\n"
    )
    (bin_dir / "skopeo").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, record


def _login(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "generator", "login", "-C", str(tmp_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_login_hands_the_password_to_skopeo_on_stdin_only(tmp_path):
    env, record = _fake_skopeo(tmp_path)
    env.update(GEN_REGISTRY="127.0.0.1:5000/team", GEN_INSECURE_REGISTRY="1", GEN_REGISTRY_USER="bot")
    env["GEN_REGISTRY_PASSWORD"] = PASSWORD
    got = _login(tmp_path, env)
    assert got.returncode == 0, got.stderr
    called = json.loads(record.read_text())
    assert called["stdin"] == PASSWORD and PASSWORD not in " ".join(called["argv"])
    assert called["argv"] == ["login", "--tls-verify=false", "--username", "bot", "--password-stdin", "127.0.0.1:5000"]
    assert PASSWORD not in got.stdout + got.stderr and "logged in to 127.0.0.1:5000 as bot" in got.stdout
    env["GEN_REGISTRY_USER"] = "wrong"
    failed = _login(tmp_path, env)
    assert failed.returncode == 1 and "invalid username/password" in failed.stderr
    assert PASSWORD not in failed.stdout + failed.stderr and "Traceback" not in failed.stderr


def test_without_credentials_login_does_nothing_and_insecure_stays_loopback_only(tmp_path):
    env, record = _fake_skopeo(tmp_path)
    env = {k: v for k, v in env.items() if not k.startswith(("GEN_REGISTRY_", "CI_REGISTRY"))}
    got = _login(tmp_path, {**env, "GEN_REGISTRY": "127.0.0.1:5000/team"})
    assert got.returncode == 0 and "not logging in" in got.stdout and not record.exists()
    remote = _login(tmp_path, {**env, "GEN_REGISTRY": "registry.example.com/team", "GEN_INSECURE_REGISTRY": "1"})
    assert remote.returncode == 2 and "loopback" in remote.stderr


def test_build_accepts_gen_insecure_registry_from_the_environment_without_a_layer_cache(tmp_path):
    (tmp_path / "specs").mkdir()
    got = subprocess.run(
        [sys.executable, "-m", "generator", "build", "--dry-run", "-C", str(tmp_path)],
        env={**os.environ, "GEN_INSECURE_REGISTRY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--insecure-registry applies to --layer-cache" not in got.stderr
    flag = subprocess.run(
        [sys.executable, "-m", "generator", "build", "--dry-run", "--insecure-registry", "-C", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k != "GEN_INSECURE_REGISTRY"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert flag.returncode == 2 and "--insecure-registry applies to --layer-cache" in flag.stderr


def test_every_emitted_job_logs_in_before_its_first_registry_call(tmp_path):
    for variant, text in _pipelines(tmp_path).items():
        data = YAML(typ="safe").load(text)
        if variant.startswith("gitlab"):
            before = data["default"]["before_script"]
            assert before.index("gen login") == len(before) - 1, variant  # after install, before every script
            continue
        for name, job in data["jobs"].items():
            runs = [s.get("run", "") for s in job["steps"]]
            login = runs.index("gen login")
            assert all("gen " not in r for r in runs[:login] if "pip" not in r), (variant, name)
            env = job["steps"][login]["env"]
            assert env["GEN_REGISTRY_PASSWORD"] == "${{ secrets.GEN_REGISTRY_PASSWORD || secrets.GITHUB_TOKEN }}"
