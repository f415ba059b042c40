"""Rendered output reading: manifests, content hashes (no mtimes), dependency order."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from generator.builder.outputs import (
    build_id_tag,
    content_key,
    dependents,
    files_sha256,
    load_outputs,
    select,
    topological_order,
)
from generator.errors import UsageError


@pytest.fixture
def chain(tmp_path, write_output):
    out = tmp_path / "output"
    write_output(out, "base", "RUN true\n", files={"rootfs/etc/a": "a\n"})
    write_output(out, "mid", "COPY rootfs/ /\n", parent="base", files={"rootfs/etc/m": "m\n"})
    write_output(out, "leaf", 'CMD ["x"]\n', parent="mid")
    write_output(out, "other", "RUN true\n", parent="base")
    write_output(out, "alone", "RUN true\n")
    return out


def test_topological_order_puts_parents_first_and_is_stable(chain):
    images = load_outputs(chain)
    order = topological_order(images)
    assert order.index("base") < order.index("mid") < order.index("leaf")
    assert order.index("base") < order.index("other")
    assert order == topological_order(load_outputs(chain))
    # Of the images ready, the first by name: mid's chain ends before other begins.
    assert order == ["alone", "base", "mid", "leaf", "other"]


def test_a_parent_cycle_in_output_is_bad_input_naming_it(chain):
    images = load_outputs(chain)
    images["base"] = dataclasses.replace(images["base"], parent="leaf")
    with pytest.raises(UsageError, match=r"parent cycle in output/: (\w+ -> ){3}\w+$"):
        topological_order(images)


def test_select_unknown_name_is_bad_input(chain):
    with pytest.raises(UsageError) as caught:
        select(load_outputs(chain), ["nope"])
    assert caught.value.exit_code == 2 and "nope" in str(caught.value) and "base" in str(caught.value)


def test_dependents_cover_descendants_only(chain):
    images = load_outputs(chain)
    assert dependents(images, {"mid"}) == {"mid", "leaf"}
    assert dependents(images, {"base"}) == {"base", "mid", "leaf", "other"}


def test_missing_parent_and_bad_manifest_are_bad_input(tmp_path, write_output):
    out = tmp_path / "output"
    write_output(out, "child", "RUN true\n", parent="gone")
    with pytest.raises(UsageError, match="gone"):
        load_outputs(out)
    (out / "child" / "gen-manifest.json").write_text("{ not json")
    with pytest.raises(UsageError, match="gen-manifest.json:1:3"):
        load_outputs(out)


def test_files_hash_ignores_mtime_but_not_bytes_mode_or_names(chain):
    mid = chain / "mid"
    before = files_sha256(mid)
    os.utime(mid / "rootfs/etc/m", (1, 1))
    assert files_sha256(mid) == before
    (mid / "rootfs/etc/m").write_text("m2\n")
    changed = files_sha256(mid)
    assert changed != before
    (mid / "rootfs/etc/m").chmod(0o600)
    assert files_sha256(mid) != changed
    (mid / "rootfs/etc/m").chmod(0o644)
    (mid / "rootfs/etc/m").write_text("m\n")
    assert files_sha256(mid) == before
    (mid / "rootfs/etc/m").rename(mid / "rootfs/etc/n")
    assert files_sha256(mid) != before


def test_files_hash_counts_empty_dirs_and_symlinks(chain):
    mid = chain / "mid"
    before = files_sha256(mid)
    (mid / "rootfs/var").mkdir()
    with_dir = files_sha256(mid)
    assert with_dir != before
    (mid / "rootfs/etc/link").symlink_to("m")
    assert files_sha256(mid) != with_dir


def test_content_key_depends_on_every_input():
    key = content_key("f", "p", "b")
    assert len({key, content_key("f2", "p", "b"), content_key("f", "p2", "b"), content_key("f", "p", "b2")}) == 4
    assert content_key("f", "p", "b") == key
    assert build_id_tag(key) == f"gen-{key[:16]}"


def test_manifest_fields_read(chain):
    mid = load_outputs(chain)["mid"]
    assert mid.parent == "base" and mid.tags == ("latest",) and mid.base_kind == "parent"
    assert json.loads((chain / "mid" / "gen-manifest.json").read_text())["name"] == "mid"


def test_long_storage_roots_get_a_short_runroot_podman_accepts():
    from generator.builder.host import MAX_RUNROOT, Host

    short = Host(storage_root=Path("/tmp/s"))
    assert short.runroot == Path("/tmp/s/run")
    long_root = Path("/tmp/" + "x" * 60)
    runroot = Host(storage_root=long_root).runroot
    assert len(str(runroot)) <= MAX_RUNROOT and runroot == Host(storage_root=long_root).runroot
    assert runroot != Host(storage_root=Path(str(long_root) + "y")).runroot
    assert f"+{runroot}]" in Host(storage_root=long_root).skopeo_ref("x")


def test_served_directories_answer_on_loopback_and_stop_after(tmp_path):
    import urllib.request

    from generator.builder.serve import served_directories
    from generator.errors import UsageError

    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("A")
    with served_directories((("URL_ARG", "files"),), tmp_path) as flags:
        assert flags[0] == "--build-arg" and flags[1].startswith("URL_ARG=http://127.0.0.1:")
        url = flags[1].split("=", 1)[1]
        with urllib.request.urlopen(f"{url}/a.txt", timeout=10) as response:
            assert response.read() == b"A"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/a.txt", timeout=5)
    with pytest.raises(UsageError, match="is not a directory"):
        with served_directories((("URL_ARG", "missing"),), tmp_path):
            pass
