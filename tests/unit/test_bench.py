"""The benchmarks' own logic: their correctness checks catch what they claim to, and the sets and
Dockerfiles they compare against are the right ones (bench/ reports a speed only after these)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import decisions  # noqa: E402
import images  # noqa: E402
import layers  # noqa: E402
import logs  # noqa: E402


def test_log_check_catches_a_lost_a_changed_and_an_unstamped_line(tmp_path):
    expected = logs.make_data(tmp_path / "data", 5_000, 100)
    assert {len(line) for line in expected.splitlines(keepends=True)} == {100}
    out = tmp_path / "out"
    out.mkdir()
    (out / "@400000000000000000000000.s").write_bytes(expected[:1000])
    (out / "current").write_bytes(expected[1000:])
    logs.check_log_dir(out, expected)
    (out / "current").write_bytes(expected[1000:-100])
    with pytest.raises(AssertionError, match="differs"):
        logs.check_log_dir(out, expected)
    (out / "current").write_bytes(expected[1000:].replace(b"000000000042", b"000000000043"))
    with pytest.raises(AssertionError, match="line 42"):
        logs.check_log_dir(out, expected)
    (out / "current").write_bytes(b"2026-01-01 00:00:00.000000000  " + expected[1000:])
    with pytest.raises(AssertionError, match="lack a iso8601 timestamp"):
        logs.check_log_dir(out, expected, stamp="iso8601")


def test_log_check_enforces_the_rotation_size(tmp_path):
    expected = logs.make_data(tmp_path / "data", 2_000, 100)
    (tmp_path / "current").write_bytes(expected)
    with pytest.raises(AssertionError, match="rotation size"):
        logs.check_log_dir(tmp_path, expected, max_file=1000)


def test_k8s_file_records_rebuild_the_stream():
    log = (b"2026-01-01T00:00:00Z stdout P abc\n2026-01-01T00:00:00Z stdout F def\n"
           b"2026-01-01T00:00:01Z stderr F ghi\n")
    assert logs.k8s_file_payload(log) == b"abcdef\nghi\n"
    with pytest.raises(AssertionError):
        logs.k8s_file_payload(b"garbage\n")


def test_decision_tree_has_100_images_and_closures_follow_extends():
    tree = decisions.make_tree()
    assert len(tree.parents) == 100
    assert tree.closure({"rt2-st1"}) == {"rt2-st1"} | {f"rt2-st1-app{i}" for i in range(7)}
    assert tree.closure({"root"}) == set(tree.parents)
    assert decisions.laincloud_rule(tree, set()) == set()


def test_decision_specs_render_as_one_chain(tmp_path):
    from generator.spec import load_project

    tree = decisions.make_tree()
    decisions.write_specs(tmp_path, tree)
    project = load_project([tmp_path / "specs"], tmp_path)
    assert {name: spec.parent for name, spec in project.specs.items()} == tree.parents
    decisions.edit(tmp_path, tree, "root", comment="# reviewed\n")
    assert load_project([tmp_path / "specs"], tmp_path).specs["root"].data == project.specs["root"].data


DOCKERFILE = """# header
ARG BASE_IMAGE=x
FROM ${BASE_IMAGE}
ARG SOURCE_DATE_EPOCH=1

RUN set -eux; \\
    apt-get update; \\
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        python3 \\
        procps \\
    ; \\
    apt-get clean

COPY gen-config/ /

COPY ["rootfs/01-app/", "/"]
"""


def test_naive_order_moves_only_the_overlay_copy_before_the_install():
    naive = layers.instructions(layers.naive_order(DOCKERFILE))
    assert [step.split()[0] for step in naive] == ["ARG", "FROM", "ARG", "COPY", "RUN", "COPY"]
    assert naive[3] == 'COPY ["rootfs/01-app/", "/"]' and naive[5] == "COPY gen-config/ /"
    assert sorted(naive) == sorted(layers.instructions(DOCKERFILE))


def test_rebuilt_bytes_count_from_the_first_changed_layer():
    before = {"a": 10, "b": 100, "c": 1000}
    assert layers.rebuilt_bytes(before, {"a": 10, "x": 100, "c": 1000}) == 1100
    assert layers.new_bytes(before, {"a": 10, "x": 100, "c": 1000}) == 100
    assert layers.rebuilt_bytes(before, dict(before)) == 0


def test_hand_written_equivalent_flattens_the_bundled_chain():
    output = ROOT / "output"
    text, packages = images.flattened(output, "app-base")
    steps = layers.instructions(text)
    assert sum(step.startswith("FROM") for step in steps) == 1
    assert images.chain(output, "app-base") == ["debian-s6", "runtime", "app-base"]
    assert "procps" in packages and all(
        "apt-get clean" not in step for step in steps if "apt-get install" in step)
    copies = [step for step in steps if step.startswith("COPY")]
    assert all(step.startswith('COPY ["debian-s6/') or step.startswith('COPY ["runtime/')
               or step.startswith('COPY ["app-base/') for step in copies)
