"""podman's image inspect, asked in one place: the build stage's record and verify's raw data."""

from __future__ import annotations

import json
import subprocess

import pytest

from generator.builder import storage
from generator.builder.host import Host
from generator.builder.storage import StoredImage, inspect, inspect_data
from generator.verify.podman import Podman

INSPECTED = {
    "Id": "a" * 64,
    "Digest": "sha256:" + "b" * 64,
    "RepoTags": ["localhost/gen/app:1"],
    "Size": 1234,
    "RootFS": {"Layers": ["sha256:1", "sha256:2"]},
    "Config": {"Labels": {"k": "v"}, "Entrypoint": ["/init"]},
    "Created": "2023-11-14T22:13:20Z",
    "Os": "linux",
    "Architecture": "arm64",
}


def _answer(code: int, stdout: str):
    calls: list[tuple[list[str], float]] = []

    def query(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        calls.append((argv, timeout))
        return subprocess.CompletedProcess(argv, code, stdout, "")

    return query, calls


def test_the_record_reads_podmans_inspect_data():
    assert StoredImage.from_inspect(INSPECTED) == StoredImage(
        "a" * 64, "sha256:" + "b" * 64, ("localhost/gen/app:1",), 1234, 2, {"k": "v"}, "2023-11-14T22:13:20Z"
    )


@pytest.mark.parametrize(("code", "stdout"), [(125, ""), (0, "not json"), (0, "[]"), (0, '["x"]')])
def test_no_image_or_an_answer_gen_cannot_read_is_none(code, stdout, monkeypatch):
    query, _ = _answer(code, stdout)
    assert inspect_data(Host(), "ref", query) is None
    monkeypatch.setattr(storage, "run_quiet", lambda argv, env, timeout, check: query(argv, env, timeout))
    assert inspect(Host(), "ref") is None  # a garbled answer was a JSONDecodeError traceback


def test_verify_asks_the_build_stages_query_through_its_own_podman():
    query, calls = _answer(0, json.dumps([INSPECTED]))
    assert Podman(Host(), execute=query).inspect_image("localhost/gen/app:1") == INSPECTED
    assert calls == [(["podman", "image", "inspect", "localhost/gen/app:1"], 60)]
