"""The builder's storage traffic: a plan reads storage once, and a no-op build runs no build and
asks storage nothing per image (100 images decided in well under a second). Storage is faked."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from generator.builder import engine, storage
from generator.builder.engine import Builder, BuildOptions
from generator.builder.host import Host, gen_containers_conf
from generator.builder.reproduce import reset_storage
from generator.render import write_outputs
from generator.render.project import render_project
from generator.spec import load_project
from tests.conftest import rehash_output_dir

BASE_REF = "localhost/test/base:1"
BASE_ID = "b" * 64


class FakeStorage:
    """Names -> ids, as buildah would keep them; counts the per-image queries."""

    def __init__(self) -> None:
        self.ids = {BASE_REF: BASE_ID}
        self.labels: dict[str, dict[str, str]] = {}  # image id -> labels
        self.per_image_queries = 0
        self.builds = self.fresh_builds = 0

    def index(self, host) -> storage.NameIndex:
        names: dict[str, tuple[str, ...]] = {}
        for name, image_id in self.ids.items():
            names[image_id] = names.get(image_id, ()) + (name,)
        return storage.NameIndex(dict(self.ids), names)

    def inspect(self, host, ref):
        self.per_image_queries += 1
        image_id = self.ids.get(ref)
        if image_id is None:
            return None
        names = tuple(n for n, i in self.ids.items() if i == image_id)
        return storage.StoredImage(image_id, "", names, 0, 1, self.labels.get(image_id, {}), "")

    def exists(self, host, ref):
        return self.inspect(host, ref) is not None

    def tag(self, host, image_id, refs):
        self.ids.update((ref, image_id) for ref in refs)

    def run_build(self, image, fresh: bool) -> tuple[str, Path]:
        self.builds += 1
        self.fresh_builds += fresh
        return f"{self.builds:064x}", Path("/dev/null")


@pytest.fixture
def fake(monkeypatch) -> FakeStorage:
    fake = FakeStorage()
    monkeypatch.setattr(storage, "name_index", fake.index)
    monkeypatch.setattr(storage, "inspect", fake.inspect)
    monkeypatch.setattr(storage, "exists", fake.exists)
    monkeypatch.setattr(storage, "tag", fake.tag)
    monkeypatch.setattr(
        engine.Builder,
        "_run_build",
        lambda _self, image, _base, _started, fresh=False: fake.run_build(image, fresh),
    )
    return fake


def project(tmp_path: Path) -> Builder:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "root.yaml").write_text(
        textwrap.dedent(f"""\
        name: root
        tags: ["1"]
        base: {{distro: debian, release: bookworm, local: {BASE_REF}}}
        init: {{kind: none}}
        """)
    )
    for i in range(5):
        (specs / f"leaf{i}.yaml").write_text(f'name: leaf{i}\ntags: ["1"]\nextends: root\nenv: {{N: "{i}"}}\n')
    write_outputs(tmp_path / "output", render_project(load_project([specs], tmp_path)).images, prune=True)
    host = Host.from_env(tmp_path / "storage")
    return Builder(host, tmp_path / "output", tmp_path, BuildOptions(prefix="localhost/gen"))


def test_no_op_build_asks_storage_nothing_per_image(tmp_path, fake):
    builder = project(tmp_path)
    first = builder.build([])
    assert first.ok and fake.builds == 6 and {b.action for b in first.built} == {"built"}
    fake.per_image_queries = fake.builds = 0
    again = Builder(builder.host, builder.output_dir, tmp_path, builder.options).build([])
    assert again.ok and fake.builds == 0 and {b.action for b in again.built} == {"skipped"}
    assert fake.per_image_queries == 0
    assert [b.image_id for b in again.built] == [b.image_id for b in first.built]


def test_a_changed_leaf_rebuilds_only_itself(tmp_path, fake):
    builder = project(tmp_path)
    builder.build([])
    (tmp_path / "output" / "leaf3" / "extra").write_text("new context file\n")
    rehash_output_dir(tmp_path / "output" / "leaf3")
    fake.builds = 0
    report = Builder(builder.host, builder.output_dir, tmp_path, builder.options).build([])
    assert {b.name for b in report.built if b.action == "built"} == {"leaf3"} and fake.builds == 1


def test_a_fresh_build_builds_an_up_to_date_image_again_without_cache(tmp_path, fake):
    """The scheduled rebuild's refresh for newer packages: same inputs, built again all the same."""
    builder = project(tmp_path)
    first = {b.name: b for b in builder.build([]).built}
    fake.builds = 0
    again = Builder(builder.host, builder.output_dir, tmp_path, builder.options)
    assert again.build_one("leaf2", first["root"].image_id).action == "skipped" and fake.builds == 0
    fresh = again.build_one("leaf2", first["root"].image_id, fresh=True)
    assert fresh.action == "built" and fake.builds == fake.fresh_builds == 1
    assert fresh.build_id == first["leaf2"].build_id and fresh.image_id != first["leaf2"].image_id
    assert fake.ids[f"localhost/gen/leaf2:{fresh.build_id}"] == fresh.image_id  # the build-id tag moved


def test_moved_base_rebuilds_everything(tmp_path, fake):
    builder = project(tmp_path)
    builder.build([])
    fake.ids[BASE_REF] = "c" * 64
    plan = Builder(builder.host, builder.output_dir, tmp_path, builder.options).plan([])
    assert [p.action for p in plan] == ["build"] * 6


def test_name_index_reads_buildah_json(monkeypatch):
    listing = [
        {"id": "sha256:" + "a" * 64, "names": ["localhost/x:1", "localhost/x:gen-1"]},
        {"id": "sha256:" + "d" * 64, "names": None},
    ]

    def fake_run(argv, env, check=True):
        assert argv[0] == "buildah" and "--json" in argv
        return subprocess.CompletedProcess(argv, 0, json.dumps(listing), "")

    monkeypatch.setattr(storage, "run_quiet", fake_run)
    index = storage.name_index(Host.from_env(Path("/nonexistent")))
    assert index.id_of("localhost/x:gen-1") == "a" * 64 and index.id_of("localhost/y:1") is None
    assert index.names["a" * 64] == ("localhost/x:1", "localhost/x:gen-1") and index.names["d" * 64] == ()


def test_a_listing_broken_by_one_image_falls_back_to_asking_per_name(monkeypatch):
    def failing_run(argv, env, check=True):
        assert check is False
        return subprocess.CompletedProcess(
            argv, 125, "", 'Error: locating item named "manifest" for image with ID "b747": file does not exist'
        )

    monkeypatch.setattr(storage, "run_quiet", failing_run)
    index = storage.name_index(Host.from_env(Path("/nonexistent")))
    assert index.ids == {} and index.id_of("localhost/x:1") is None


def test_layer_cache_reads_and_writes_the_registry_repository(tmp_path, fake):
    builder = project(tmp_path)
    image = builder.images["leaf0"]
    plain = builder.build_argv(image, BASE_ID, tmp_path / "iid")
    assert "--cache-from" not in plain
    cached = Builder(
        builder.host,
        builder.output_dir,
        tmp_path,
        BuildOptions(layer_cache="127.0.0.1:5000/team/cache", layer_cache_tls_verify=False),
    )
    argv = cached.build_argv(image, BASE_ID, tmp_path / "iid")
    assert argv[argv.index("--cache-from") + 1] == argv[argv.index("--cache-to") + 1] == "127.0.0.1:5000/team/cache"
    assert "--tls-verify=false" in argv
    fresh = cached.build_argv(image, BASE_ID, tmp_path / "iid", fresh=True)
    assert "--cache-from" not in fresh and "--no-cache" in fresh


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")
def test_resetting_a_storage_of_gens_own_leaves_podmans_host_state_alone(tmp_path):
    """podman system reset deletes podman's state directory; for a storage of gen's own that is
    the storage's own (--tmpdir), never the host's /run/libpod, which other podman runs rely on."""
    other, host = Host.from_env(tmp_path / "other"), Host.from_env(tmp_path / "storage")
    assert host.podman_flags()[-2:] == ["--tmpdir", str(tmp_path / "storage" / "libpod")]
    for argv in (["podman", *other.global_flags()], ["podman", *host.podman_flags()]):  # the first uses /run/libpod
        subprocess.run([*argv, "images"], env=host.env, check=True, capture_output=True, timeout=60)
    assert Path("/run/libpod/alive").exists()
    reset_storage(host)
    assert Path("/run/libpod/alive").exists() and not (tmp_path / "storage").exists()
    reset_storage(other)  # an older gen's storage: its podman database names /run/libpod
    assert Path("/run/libpod/alive").exists() and not (tmp_path / "other").exists()


def test_pulled_images_are_up_to_date_without_the_roots_base_in_storage(tmp_path, fake):
    """A storage holding only the pulled images (a CI job, a fresh machine) judges the root by the
    base its stored image records: nothing to build, so no base is bootstrapped or pulled. A root
    whose stored image records another base, or none, is built."""
    builder = project(tmp_path)
    built = {b.name: b for b in builder.build([]).built}
    root_id = built["root"].image_id
    pulled = {ref: image_id for ref, image_id in fake.ids.items() if ref != BASE_REF}
    fake.ids = dict(pulled)
    fake.labels[root_id] = {engine.BASE_DIGEST_LABEL: f"sha256:{BASE_ID}"}
    fresh = Builder(builder.host, builder.output_dir, tmp_path, builder.options)
    assert [p.action for p in fresh.plan([])] == ["skip"] * 6
    fake.builds = 0
    assert fresh.build([]).ok and fake.builds == 0
    fake.labels[root_id] = {engine.BASE_DIGEST_LABEL: "sha256:" + "c" * 64}
    assert [p.action for p in fresh.plan([])] == ["build"] * 6
    fake.labels[root_id] = {}
    assert [p.action for p in fresh.plan([])] == ["build"] * 6


def test_a_storage_of_gens_own_gets_the_containers_conf_that_keeps_podmans_locks_in_it(tmp_path):
    """Only a store of gen's own switches lock type (the user's podman shares the normal store's
    locks); a CONTAINERS_CONF the user chose is theirs to keep."""
    default, isolated = str(gen_containers_conf()), str(gen_containers_conf(isolated=True))
    assert Host.from_env(env={}).env["CONTAINERS_CONF"] == default
    assert Host.from_env(tmp_path / "s", env={}).env["CONTAINERS_CONF"] == isolated
    assert Host.from_env(tmp_path / "s", env={"CONTAINERS_CONF": default}).env["CONTAINERS_CONF"] == isolated
    own = tmp_path / "mine.conf"
    own.write_text("[containers]\n")
    assert Host.from_env(tmp_path / "s", env={"CONTAINERS_CONF": str(own)}).env["CONTAINERS_CONF"] == str(own)
    assert 'lock_type = "file"' in Path(isolated).read_text() and "lock_type" not in Path(default).read_text()


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")
def test_podman_objects_in_a_storage_of_gens_own_take_their_locks_from_it(tmp_path):
    """A volume made in gen's store locks through a file in the store, so deleting the store
    leaks nothing into the machine's table of 2048 (which deleted test storages once filled)."""
    host = Host.from_env(tmp_path / "storage")
    subprocess.run(
        ["podman", *host.podman_flags(), "volume", "create", "probe"],
        env=host.env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert [p.name for p in (tmp_path / "storage" / "libpod" / "locks").iterdir()] == ["0"]
    reset_storage(host)


# -- building a set: fresh images, stored ancestors, a gate per image (the scheduled rebuild's use) --


def test_fresh_names_are_built_again_and_ancestors_are_not(tmp_path, fake):
    builder = project(tmp_path)
    builder.build([])
    fake.builds = 0
    again = Builder(builder.host, builder.output_dir, tmp_path, builder.options)
    report = again.build(["leaf2"], fresh=["leaf2"])
    assert [(b.name, b.action) for b in report.built] == [("root", "skipped"), ("leaf2", "built")]
    assert fake.builds == fake.fresh_builds == 1


def test_stored_ancestors_are_taken_as_stored_not_decided(tmp_path, fake):
    """The root's build-id tag is gone (the machine only pulled its spec tag): a plain build
    would build it again; with stored_ancestors only the named leaf is built, FROM the stored root."""
    builder = project(tmp_path)
    first = {b.name: b for b in builder.build([]).built}
    del fake.ids[f"localhost/gen/root:{first['root'].build_id}"]
    (tmp_path / "output" / "leaf1" / "extra").write_text("changed\n")
    rehash_output_dir(tmp_path / "output" / "leaf1")
    fake.builds = 0
    again = Builder(builder.host, builder.output_dir, tmp_path, builder.options)
    report = again.build(["leaf1"], stored_ancestors=True)
    assert [(b.name, b.action) for b in report.built] == [("leaf1", "built")] and fake.builds == 1
    assert again.plan(["leaf1"])[0].action == "build"  # what a plain build would have done to the root


def test_a_missing_stored_ancestor_fails_and_its_children_are_skipped(tmp_path, fake):
    builder = project(tmp_path)
    builder.build([])
    del fake.ids["localhost/gen/root:1"]
    report = Builder(builder.host, builder.output_dir, tmp_path, builder.options).build(
        ["leaf1"], stored_ancestors=True
    )
    assert [f.image for f in report.failed] == ["root"] and "run `gen build` or `gen pull` first" in str(
        report.failed[0]
    )
    assert report.skipped_after_failure == ["leaf1"] and report.built == []


def test_the_gate_runs_per_image_before_its_children_and_a_failure_skips_them(tmp_path, fake):
    from generator.errors import GenError

    builder = project(tmp_path)
    seen: list[str] = []

    def gate(name, built):
        seen.append(f"gate {name} after {fake.builds} builds")
        assert [b.name for b in built] == [name]
        if name == "leaf0":
            raise GenError("verify failed")

    report = builder.build([], after_image=gate)
    assert seen[0] == "gate root after 1 builds"  # before any leaf was built
    assert sorted(line.split()[1] for line in seen[1:]) == [f"leaf{i}" for i in range(5)]
    assert [(f.image, f.step) for f in report.failed] == [("leaf0", "after build")]
    assert str(report.failed[0]) == "leaf0: verify failed"

    seen.clear()
    (tmp_path / "output" / "root" / "extra").write_text("changed\n")
    rehash_output_dir(tmp_path / "output" / "root")
    fake.builds = 0

    def refuse_root(name, built):
        seen.append(name)
        if name == "root":
            raise GenError("push refused")

    report = Builder(builder.host, builder.output_dir, tmp_path, builder.options).build([], after_image=refuse_root)
    assert seen == ["root"] and fake.builds == 1  # no leaf built on a root that failed its gate
    assert sorted(report.skipped_after_failure) == [f"leaf{i}" for i in range(5)]


def _rebuild_context(tmp_path: Path, fake: FakeStorage, monkeypatch, changed: str, verified: dict[str, str]):
    """gen rebuild over the fake storage, without registry, after every image was built and
    `changed`'s rendered folder changed; verify answers from `verified` (by NAME:TAG)."""
    from types import SimpleNamespace

    from generator.builder.outputs import load_outputs
    from generator.rebuild import scheduled

    def locked(host, images, name, prefix, digest=""):
        return SimpleNamespace(packages={}, digest=digest, image_id=fake.ids[f"{prefix}/{name}:1"])

    monkeypatch.setattr(scheduled, "locked_image", locked)
    monkeypatch.setattr(scheduled, "_sbom", lambda ctx, name, entry: None)
    monkeypatch.setattr(scheduled, "_verify", lambda ctx, ref: verified.get(ref.split("/")[-1], "passed"))
    builder = project(tmp_path)
    builder.build([])
    (tmp_path / "output" / changed / "extra").write_text("changed\n")
    rehash_output_dir(tmp_path / "output" / changed)
    fake.builds = 0
    events: list = []
    images = load_outputs(builder.output_dir)
    ctx = scheduled.RebuildContext(builder.host, builder.project_root, images, "localhost/gen", None)
    ctx.on_event = events.append
    return ctx, events


def test_rebuild_asks_the_builder_for_the_stale_set_fresh_where_only_packages_moved(tmp_path, fake, monkeypatch):
    from generator.builder.events import Phase
    from generator.rebuild.lock import Lock
    from generator.rebuild.scheduled import CHANGED, PACKAGES, Verdict, run_rebuild

    ctx, events = _rebuild_context(tmp_path, fake, monkeypatch, "leaf1", {"leaf1:1": "failed: a check"})
    verdicts = [Verdict("root"), Verdict("leaf0"), Verdict("leaf1")]
    verdicts[1].add(PACKAGES, "1 package update(s)")
    verdicts[2].add(CHANGED, "spec changed")
    outcomes = {o.name: o for o in run_rebuild(ctx, verdicts, Lock())}
    assert fake.builds == 2 and fake.fresh_builds == 1  # the root is used as stored
    assert outcomes["leaf0"].action == "rebuilt" and outcomes["leaf0"].verify == "passed"
    assert outcomes["leaf1"].action == "failed" and "but verify failed: a check" in outcomes["leaf1"].error
    assert set(outcomes) == {"leaf0", "leaf1"}
    # One channel: the builder's events and the rebuild's own steps reach the same handler.
    assert {Phase.PLANNED, Phase.TAGGED, Phase.VERIFY, Phase.FAILED} <= {e.phase for e in events}


def test_rebuild_builds_no_child_on_a_parent_that_failed_verify(tmp_path, fake, monkeypatch):
    from generator.rebuild.lock import Lock
    from generator.rebuild.scheduled import CHANGED, PARENT_REBUILT, Verdict, run_rebuild

    ctx, _ = _rebuild_context(tmp_path, fake, monkeypatch, "root", {"root:1": "failed: init"})
    verdicts = [Verdict("root")] + [Verdict(f"leaf{i}") for i in range(5)]
    verdicts[0].add(CHANGED, "spec changed")
    for verdict in verdicts[1:]:
        verdict.add(PARENT_REBUILT, "parent root is rebuilt")
    outcomes = run_rebuild(ctx, verdicts, Lock())
    assert fake.builds == 1
    assert [(o.name, o.action) for o in outcomes] == [("root", "failed")] + [
        (f"leaf{i}", "skipped-after-failure") for i in range(5)
    ]
    assert outcomes[1].error == "parent root failed"


def test_an_interrupted_rebuild_builds_nothing_more_and_says_so(tmp_path, fake, monkeypatch):
    from generator.rebuild import scheduled
    from generator.rebuild.lock import Lock
    from generator.rebuild.scheduled import CHANGED, Verdict, run_rebuild

    ctx, _ = _rebuild_context(tmp_path, fake, monkeypatch, "leaf1", {})
    ctx.cancel.set()  # Ctrl-C before the build starts (the CLI's signal handler sets it)
    verdict = Verdict("leaf1")
    verdict.add(CHANGED, "spec changed")
    [outcome] = run_rebuild(ctx, [Verdict("root"), verdict], Lock())
    assert fake.builds == 0 and outcome.action == "failed" and outcome.error.startswith("interrupted")
    monkeypatch.setattr(scheduled, "assess", lambda ctx, lock: [verdict])
    monkeypatch.setattr(scheduled, "require_platforms", lambda *args, **kwargs: None)
    written: list = []
    monkeypatch.setattr(scheduled, "write_lock", lambda project, lock: written.append(lock))
    with pytest.raises(scheduled.Interrupted, match="gen.lock has what was pushed before the signal"):
        scheduled.rebuild(ctx, dry_run=False)
    assert written  # the lock is written before saying so
