"""The benchmarks' own logic: their correctness checks catch what they claim to, and the sets and
Dockerfiles they compare against are the right ones (bench/ reports a speed only after these)."""

from __future__ import annotations

import dataclasses
import importlib
import math
import shutil
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import decisions  # noqa: E402
import images  # noqa: E402
import layers  # noqa: E402
import logs  # noqa: E402
import run as bench_run  # noqa: E402
from common import BenchError, Section, Size  # noqa: E402


def magnitudes(value: object) -> list[float]:
    """The numbers in a module's parameters, in field order (None: no limit); names are skipped."""
    if dataclasses.is_dataclass(value):
        return [m for f in dataclasses.fields(value) for m in magnitudes(getattr(value, f.name))]
    if value is None:
        return [math.inf]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return []


@pytest.mark.parametrize("name", list(bench_run.MODULES))
def test_smoke_does_less_than_quick_and_quick_no_more_than_full(name):
    params = importlib.import_module(name).PARAMS
    assert set(params) == set(Size)
    smoke, quick, full = (magnitudes(params[size]) for size in (Size.SMOKE, Size.QUICK, Size.FULL))
    assert smoke and len(smoke) == len(quick) == len(full)
    pairs = list(zip(smoke, quick, strict=True))
    assert all(s <= q for s, q in pairs) and any(s < q for s, q in pairs)
    assert all(q <= f for q, f in zip(quick, full, strict=True))


def test_smoke_decisions_keep_four_distinct_scenarios_on_about_five_images():
    shape = decisions.PARAMS[Size.SMOKE].shape
    tree = decisions.make_tree(shape)
    leaf, middle = decisions.changed_images(shape)
    assert len(tree.parents) == decisions.PARAMS[Size.SMOKE].images <= 6
    assert tree.closure({leaf}) == {leaf} and len(tree.closure({middle})) > 1
    assert tree.closure({middle}) != set(tree.parents)
    assert decisions.changed_images(decisions.Shape()) == ("rt1-st2-app3", "rt2-st1")


def test_render_scale_counts_grow_tenfold_to_the_largest():
    from render_scale import PARAMS

    assert PARAMS[Size.FULL].counts == (10, 100, 1000)
    assert PARAMS[Size.SMOKE].counts[-1] == PARAMS[Size.SMOKE].largest


def test_smoke_copy_of_the_bundled_specs_builds_for_the_host_platform_only(tmp_path):
    from generator.spec import load_project

    full, native = tmp_path / "full" / "specs", tmp_path / "native" / "specs"
    common.copy_bundled_specs(full, native_only=False)
    common.copy_bundled_specs(native, native_only=True)
    assert (full / "debian-s6.yaml").read_text() == (ROOT / "specs" / "debian-s6.yaml").read_text()
    project = load_project([native], native.parent)
    assert project.specs and all(spec.data.get("platforms") is None for spec in project.specs.values())


def test_smoke_examples_never_share_the_full_runs_project_or_storage():
    smoke, quick = common.examples_for(Size.SMOKE), common.examples_for(Size.QUICK)
    assert common.examples_for(Size.FULL) == quick
    assert smoke.project != quick.project and smoke.storage.root != quick.storage.root


def test_exit_code_counts_a_section_that_could_not_run_only_under_smoke():
    could_not = [bench_run.Outcome.MEASURED, bench_run.Outcome.COULD_NOT_RUN]
    assert bench_run.exit_code(could_not, Size.SMOKE) == 1
    assert bench_run.exit_code(could_not, Size.QUICK) == bench_run.exit_code(could_not, Size.FULL) == 0
    for size in Size:
        assert bench_run.exit_code([bench_run.Outcome.FAILED], size) == 1
        assert bench_run.exit_code([bench_run.Outcome.CRASHED], size) == 1
        assert bench_run.exit_code([bench_run.Outcome.MEASURED], size) == 0


def fake_module(monkeypatch, name: str, measure) -> list[Size]:
    """Replace bench module name by one whose measure is given; returns the sizes it was asked for."""
    asked: list[Size] = []

    def recorded(size: Size):
        asked.append(size)
        return measure(size)

    monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(measure=recorded))
    return asked


def test_a_section_that_cannot_run_fails_a_smoke_run_only(monkeypatch, tmp_path):
    def cannot(size: Size) -> Section:
        raise BenchError("not installed: s6-log")

    asked = fake_module(monkeypatch, "logs", cannot)
    out = tmp_path / "smoke.md"
    assert bench_run.main(["logs", "--smoke", "--output", str(out)]) == 1
    assert bench_run.main(["logs", "--quick", "--output", str(tmp_path / "quick.md")]) == 0
    assert asked == [Size.SMOKE, Size.QUICK]
    text = out.read_text()
    assert text.startswith("# gen benchmarks\n\n**Smoke run: its numbers mean nothing.**")
    assert "could not run here: not installed: s6-log" in text
    assert "Smoke run" not in (tmp_path / "quick.md").read_text()


def test_a_measured_smoke_run_exits_zero_and_defaults_away_from_the_results(monkeypatch, tmp_path):
    asked = fake_module(monkeypatch, "render_scale", lambda size: Section("render scale", ["n"], [[1]]))
    monkeypatch.setattr(bench_run, "WORK", tmp_path)
    assert bench_run.main(["render_scale", "--smoke"]) == 0
    assert asked == [Size.SMOKE] and "| 1 |" in (tmp_path / "smoke.md").read_text()
    assert bench_run.parse_args([]).size is Size.FULL


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
    log = b"2026-01-01T00:00:00Z stdout P abc\n2026-01-01T00:00:00Z stdout F def\n2026-01-01T00:00:01Z stderr F ghi\n"
    assert logs.k8s_file_payload(log) == b"abcdef\nghi\n"
    with pytest.raises(AssertionError):
        logs.k8s_file_payload(b"garbage\n")


def test_log_variants_keep_the_limit_first_and_compare_gen_log_with_s6_log(tmp_path):
    host = logs.host_variants(tmp_path)
    names = [v.name for v in host]
    assert names[0] == "pipe to a file (limit)" and len(set(names)) == len(names)
    gen = [v for v in host if v.argv == ("GEN-LOG-RUN",)]
    assert {v.env["GEN_INIT_ROOT"] for v in gen} == {str(tmp_path)}
    assert {v.env["GEN_LOGGER"] for v in gen} == {"gen-log", "s6-log"}
    assert {logs.GEN_LOG_DEFAULT, logs.GEN_LOG_ISO8601, logs.GEN_S6_LOG} <= set(names)
    container = logs.container_variants()
    assert container[0].name == "write to a file in the container (limit)"
    assert container[-1].name == "podman k8s-file driver alone (cat to stdout, no init)"
    shipped = next(v for v in container if v.name == logs.SHIPPED)
    assert set(shipped.checks) == {"files", "k8s"} and "GEN_LOG_STDOUT=0" not in shipped.args


def test_log_target_notes_say_met_or_missed_from_the_numbers():
    host = Section(
        "host",
        [],
        rows=[
            [100, logs.GEN_LOG_DEFAULT, 0.1, 1.0, 0.6],
            [100, logs.GEN_LOG_ISO8601, 0.1, 1.0, 0.2],
            [100, logs.GEN_S6_LOG, 0.1, 1.0, 0.1],
        ],
    )
    assert logs.host_target_note(host) == (
        "Targets: 100-byte lines: gen-log 0.6 of pipe-to-file with rotation (target 0.5, met), 0.2 with iso8601 "
        "timestamps (target 0.3, missed); 6.0x the same log-run with GEN_LOGGER=s6-log."
    )
    container = Section(
        "container",
        [],
        rows=[
            [100, logs.SHIPPED, 1.0, 1.0, 0.4, 1.1, 2.0, 0.97],
            [1000, logs.SHIPPED, 1.0, 1.0, 0.5, 0.9, 2.0, 1.02],
        ],
    )
    note = logs.container_target_note(container)
    assert note.startswith(
        "Targets: 100-byte lines: the app under the shipped pipeline writes at 1.1x its speed into k8s-file "
        "alone (target 1, met) and 0.4 of a file write in the container (target 0.5, missed); end to end, "
        "until podman holds every line, 0.97x k8s-file alone (target 1, missed)"
    )
    assert "until podman holds every line, 1.02x k8s-file alone (target 1, met)" in note
    container.rows[0][7] = "n/a"
    assert "0.97" not in logs.container_target_note(container)
    assert "holds every line, too short at this size to measure; 1000-byte" in logs.container_target_note(container)
    assert "1000-byte lines: the app under the shipped pipeline writes at 0.9x its speed into k8s-file alone " in note
    assert "(target 1, missed) and 0.5 of a file write in the container (target 0.5, met)" in note


def test_every_container_variant_times_its_app_inside_the_container():
    """The app's own time is what logging costs it; each variant's command writes it where the
    bench reads it, and the limit writes to a file, not to stdout."""
    for variant in logs.container_variants():
        command = variant.args[-1]
        assert logs.APP_TIME in command and command.count("cat /bench/input") == 1, variant.name
    assert "> /bench/logs/current" in logs.container_variants()[0].args[-1]


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("s6-log")), reason="needs gcc and s6-log")
def test_host_log_run_variants_run_gen_log_from_a_copy_of_the_init(tmp_path):
    template = logs.INIT_TEMPLATE / logs.INIT_LIB
    before = sorted(p.name for p in template.iterdir())
    root = logs.build_init_root(tmp_path)
    assert sorted(p.name for p in template.iterdir()) == before and not (template / "gen-log").exists()
    assert (root / logs.INIT_LIB / "gen-log").stat().st_mode & 0o111
    data = tmp_path / "data"
    expected = logs.make_data(data, 20_000, 100)
    for variant in logs.host_variants(root):
        if variant.argv == ("GEN-LOG-RUN",):
            assert logs.run_host_variant(variant, data, expected, tmp_path) > 0


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
    # gen-log's builder stage stays a builder stage; everything else is one final stage.
    assert [step for step in steps if step.startswith("FROM")] == [
        "FROM ${BASE_IMAGE} AS gen-log",
        "FROM ${BASE_IMAGE}",
    ]
    assert "COPY --from=gen-log /gen-log-out/ /" in steps
    assert images.chain(output, "app-base") == ["debian-s6", "runtime", "app-base"]
    assert "procps" in packages and all("apt-get clean" not in step for step in steps if images.is_apt_install(step))
    copies = [step for step in steps if step.startswith("COPY") and not step.startswith("COPY --from=")]
    assert all(
        step.startswith('COPY ["debian-s6/')
        or step.startswith('COPY ["runtime/')
        or step.startswith('COPY ["app-base/')
        for step in copies
    )
