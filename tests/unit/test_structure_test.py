"""The generated container-structure-test config, and reading the tool's report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from generator.builder.host import Host
from generator.builder.proc import ToolError
from generator.render import yaml_lines
from generator.render.project import render_project
from generator.spec import load_project
from generator.verify.structure import _report_json, parse_report, podman_api_socket

ROOT = Path(__file__).resolve().parents[2]


def config(name: str) -> dict:
    rendered = render_project(load_project([ROOT / "specs"], ROOT)).images
    image = next(i for i in rendered if i.name == name)
    return YAML(typ="safe").load(image.file("structure-test.yaml").data.decode())


def by_name(tests: list[dict], name: str) -> dict:
    return next(t for t in tests if t["name"] == name)


def go_match(pattern: str, text: str) -> bool:
    """Go's RE2 semantics for what we use: $ only at the very end of the text."""
    return re.search(pattern.replace("$", r"\Z"), text) is not None


def test_accounts_volumes_and_log_dir_are_checked_with_their_ids():
    tests = config("app-base")["commandTests"]
    passwd = by_name(tests, "user app: uid, gid, home and shell")
    assert passwd["command"] == "getent" and passwd["args"] == ["passwd", "app"]
    assert go_match(passwd["expectedOutput"][0], "app:x:1000:1000::/home/app:/bin/sh\n")
    assert not go_match(passwd["expectedOutput"][0], "app:x:1001:1000::/home/app:/bin/sh\n")
    volume = by_name(tests, "volume /data")
    assert volume["args"] == ["-c", "%u:%g %a", "/data"]
    assert go_match(volume["expectedOutput"][0], "1000:1000 750\n")
    assert not go_match(volume["expectedOutput"][0], "0:0 750\n")
    log_dir = by_name(tests, "log directory")
    assert go_match(log_dir["expectedOutput"][0], "1000:0 2775\n")  # PID 1 runs as app, group 0 shares it
    assert not go_match(log_dir["expectedOutput"][0], "0:0 2775\n")
    groups = by_name(tests, "user app: groups")
    assert all(go_match(p, "app\n") for p in groups["expectedOutput"])
    assert not any(go_match(p, "apple\n") for p in groups["expectedOutput"])


def test_packages_include_the_init_layers_and_are_checked_without_dollar_braces():
    tests = config("runtime")["commandTests"]
    packages = sorted(t["args"][1] for t in tests if t["name"].startswith("package "))
    assert packages == ["ca-certificates", "execline", "procps", "s6"]
    assert not any("${" in arg for t in tests for arg in t.get("args", []))


def test_metadata_matches_the_dockerfile():
    meta = config("app-base")["metadataTest"]
    assert meta["entrypoint"] == ["/init"]
    assert meta["cmd"] == ["sh", "-c", "cat /etc/app-base/motd; exec sleep infinity"]
    assert meta["volumes"] == ["/data"] and meta["workdir"] == "/home/app"
    assert {"key": "LANG", "value": "C.UTF-8"} in meta["envVars"]
    labels = {entry["key"] for entry in meta["labels"]}
    assert "org.opencontainers.image.title" in labels
    assert "org.opencontainers.image.base.digest" not in labels  # only known at build time


def test_report_parsing_reads_failures():
    text = "log line\n" + json.dumps(
        {
            "Pass": 1,
            "Fail": 1,
            "Results": [{"Name": "a", "Pass": True}, {"Name": "b", "Pass": False, "Errors": ["uid 0, want 1000"]}],
        }
    )
    report = parse_report(_report_json(text))
    assert not report.passed and [c.name for c in report.failures] == ["b"]
    assert report.failures[0].errors == ("uid 0, want 1000",)
    assert parse_report(json.dumps({"Pass": 2, "Fail": 0, "Results": []})).passed


def test_a_podman_service_that_cannot_start_is_one_error_line_in_its_own_words(tmp_path):
    """A failed check row (a ToolError), never a traceback: verify turns gen's errors into rows."""
    fake = tmp_path / "bin" / "podman"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Error: cannot listen on the socket' >&2\nexit 125\n")
    fake.chmod(0o755)
    host = Host(base_env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    with pytest.raises(ToolError, match="podman system service did not start: Error: cannot listen on the socket"):
        with podman_api_socket(host):
            pass


_scalars = st.one_of(st.text(), st.integers(), st.booleans(), st.none())
_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _documents, min_size=1, max_size=5))
def test_yaml_emitter_round_trips_through_a_yaml_parser(data):
    text = "".join(line + "\n" for line in yaml_lines(data))
    assert YAML(typ="safe", pure=True).load(text) == data
