"""Planning and running builds of rendered images, parents first, skipping what is up to date.

Atomic tagging: buildah builds to an untagged image id (--iidfile); only after it succeeds does
one `buildah tag` give it the build-id tag and every spec tag. An interrupted or failed build
therefore leaves every tag on the previous good image.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

from generator.builder import storage
from generator.builder.bootstrap import bootstrap_base
from generator.builder.decide import BuildRecord, Decision, decide, read_record, write_record
from generator.builder.docker_config import make_reproducible
from generator.builder.doctor import Check, build_problems
from generator.builder.events import BuildEvent, EventHandler, Phase, ignore_event
from generator.builder.host import Host, host_platform, tool_version
from generator.builder.outputs import (
    OutputImage,
    ancestors,
    expand_platforms,
    files_sha256,
    load_outputs,
    select,
    topological_order,
    units_of,
)
from generator.builder.proc import Cancel, Interrupted, ToolError, run_logged
from generator.builder.serve import served_directories
from generator.errors import GenError, UsageError
from generator.naming import DEFAULT_PREFIX

BACKENDS = ("buildah", "podman")
# buildah 1.41 added --source-date-epoch and --rewrite-timestamp (which also clamps file times
# inside layers); older versions only fix the config and history times with --timestamp.
SOURCE_DATE_EPOCH_FLAGS_SINCE = (1, 41)
BASE_DIGEST_LABEL = "org.opencontainers.image.base.digest"
_STEP = re.compile(r"^STEP \d+(/\d+)?: ")
# Output that points at the host rather than the Dockerfile.
_HOST_PROBLEMS = (
    "rlimit",
    "no space left",
    "permission denied",
    "operation not permitted",
    "error mounting",
    "overlay",
    "storage",
    "newuidmap",
    "read-only file system",
    "temporary failure resolving",
    "could not resolve",
    "failed to fetch",
)


@dataclass(frozen=True)
class BuildOptions:
    prefix: str = DEFAULT_PREFIX
    jobs: int = 1
    backend: str = "buildah"
    dry_run: bool = False
    layer_cache: str | None = None  # HOST/REPO whose cached layers builds read and extend (CI runners)
    layer_cache_tls_verify: bool = True
    platforms: tuple[str, ...] = ()  # build only these platforms' images (a CI job per platform)


@dataclass(frozen=True)
class PlannedImage:
    """One image of the plan: what will happen to it and why. key and build_id are None while a
    parent or the base must be built first (they depend on its resulting id)."""

    name: str
    action: str  # build, skip, retag
    reasons: tuple[str, ...]
    key: str | None
    build_id: str | None
    tags: tuple[str, ...]  # full references
    parent: str | None
    image_id: str | None = None  # the stored image a skip or retag reuses


@dataclass(frozen=True)
class BuiltImage:
    name: str
    action: str  # built, skipped, retagged
    reasons: tuple[str, ...]
    image_id: str
    build_id: str
    tags: tuple[str, ...]
    elapsed: float
    log: Path | None


class BuildFailed(ToolError):
    """One image's build failed; names it and the step."""

    def __init__(self, image: str, step: str, message: str, tail: list[str], log: Path | None):
        super().__init__(message, tail, log)
        self.image = image
        self.step = step


@dataclass
class BuildReport:
    built: list[BuiltImage] = field(default_factory=list)
    failed: list[BuildFailed] = field(default_factory=list)
    skipped_after_failure: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped_after_failure


ImageGate = Callable[[str, list[BuiltImage]], None]
_Running = dict[Future, tuple[str, bool]]  # -> (a unit, or an image for its gate; is a gate)


@dataclass
class _Run:
    """One build()'s state, over build units (one per image and platform), parents first. A unit
    is done, so its children may start, once built or skipped, and, for an image with an
    after_image gate, once the gate has passed for all of that image's units."""

    order: list[str]
    fresh: set[str]
    after_image: ImageGate | None
    gated: set[str]  # images (spec names) whose gate runs
    requested: set[str] | None = None  # with stored_ancestors: the units decided; others as stored
    pending: list[str] = field(init=False)
    done: dict[str, str] = field(default_factory=dict)  # unit -> image id
    unchanged: set[str] = field(default_factory=set)  # skipped as planned, so children may be too
    failed: set[str] = field(default_factory=set)
    waiting: dict[str, BuiltImage] = field(default_factory=dict)  # built, before the image's gate
    gating: dict[str, list[BuiltImage]] = field(default_factory=dict)  # image -> its units, gate running
    report: BuildReport = field(default_factory=BuildReport)

    def __post_init__(self) -> None:
        self.pending = list(self.order)

    def position(self, images: dict[str, OutputImage], name: str) -> int:
        """Where a unit, or an image's gate (at its first unit), sorts in dependency order."""
        if name in self.order:
            return self.order.index(name)
        return min(i for i, unit in enumerate(self.order) if images[unit].repo == name)

    def ready(self, images: dict[str, OutputImage], cancelled: bool) -> tuple[list[str], list[tuple[str, str]]]:
        """Units whose parent is done (none while cancelled), and (unit, why) for those dropped
        because their parent or their image failed."""
        starting, dropped = [], []
        for name in list(self.pending):
            parent = images[name].parent
            if parent in self.failed or name in self.failed:
                self.pending.remove(name)
                self.failed.add(name)
                self.report.skipped_after_failure.append(name)
                image = images[name].repo
                dropped.append((name, f"parent {parent} failed" if parent in self.failed else f"{image} failed"))
                self._fail_image(images, image)
            elif (not parent or parent in self.done) and not cancelled:
                self.pending.remove(name)
                starting.append(name)
        return starting, dropped

    def built(self, images: dict[str, OutputImage], name: str, result: BuiltImage) -> None:
        self.report.built.append(result)
        if images[name].repo not in self.gated:
            self.done[name] = result.image_id
        elif name not in self.failed:  # another platform of its image may have failed meanwhile
            self.waiting[name] = result

    def gates_due(self, images: dict[str, OutputImage]) -> list[tuple[str, list[BuiltImage]]]:
        """Images whose every unit in this build is built: their gate may run now."""
        due = []
        for image in sorted({images[n].repo for n in self.waiting}):
            units = [n for n in self.order if images[n].repo == image]
            if all(n in self.waiting for n in units):
                self.gating[image] = [self.waiting.pop(n) for n in units]
                due.append((image, self.gating[image]))
        return due

    def passed(self, image: str) -> None:
        for result in self.gating.pop(image):
            self.done[result.name] = result.image_id

    def fail(self, images: dict[str, OutputImage], failure: BuildFailed | None, name: str = "") -> None:
        """A unit's build, or an image's gate, failed (failure None: interrupted). With gates, one
        platform failing fails its whole image, so no child of any platform is published."""
        name = failure.image if failure else name
        self.failed.add(name)
        if failure is not None:
            self.report.failed.append(failure)
        self._fail_image(images, images[name].repo if name in images else name)

    def _fail_image(self, images: dict[str, OutputImage], image: str) -> None:
        if image in self.gated:
            units = [n for n in self.order if images[n].repo == image]
            self.failed.update(units)
            self.gating.pop(image, None)
            for unit in units:
                self.waiting.pop(unit, None)


def full_tags(image: OutputImage, prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}/{image.repo}:{tag}" for tag in image.tags)


class Builder:
    """Builds rendered images in one storage. Thread-safe for --jobs: each image is built by one
    worker; bootstraps of a shared base are serialised by a lock."""

    def __init__(
        self,
        host: Host,
        output_dir: Path,
        project_root: Path,
        options: BuildOptions,
        on_event: EventHandler = ignore_event,
        cancel: Cancel | None = None,
    ):
        if options.backend not in BACKENDS:
            raise GenError(f"unknown backend {options.backend!r}; use one of {', '.join(BACKENDS)}")
        self.host = host
        self.output_dir = output_dir
        self.project_root = project_root
        self.options = options
        self.on_event = on_event
        self.cancel = cancel or Cancel()
        self.host_platform = host_platform()
        self.images = expand_platforms(load_outputs(output_dir), self.host_platform)
        self._bootstrap_lock = threading.Lock()
        self._files: dict[str, str] = {}

    # -- inputs --------------------------------------------------------------------------------

    def files_hash(self, name: str) -> str:
        image = self.images[name]
        if name not in self._files:  # load_output hashed the folder as it checked it
            self._files[name] = image.files_sha256 or files_sha256(image.directory)
        return self._files[name]

    def closure(self, names: list[str]) -> list[str]:
        """The named images (all when none; every platform of each) and their ancestors, parents first."""
        per_name = {n: units_of(self.images, n) for n in names}
        # An unknown name stays as given, so select() reports it.
        wanted = [u.name for n in names for u in per_name[n]] + [n for n in names if not per_name[n]]
        chosen = set(select(self.images, wanted))
        if self.options.platforms:
            chosen = {n for n in chosen if self.platform_of(n) in self.options.platforms}
            missing = [
                n for n in names if not any(self.platform_of(u.name) in self.options.platforms for u in per_name[n])
            ]
            if missing or not chosen:
                raise UsageError(
                    f"{', '.join(missing) or 'no image'} is not built for "
                    f"{', '.join(self.options.platforms)}; see the spec's platforms"
                )
        for name in list(chosen):
            chosen.update(ancestors(self.images, name))
        return [n for n in topological_order(self.images) if n in chosen]

    def platform_of(self, name: str) -> str:
        return self.images[name].platform or self.host_platform

    def base_id(self, image: OutputImage, index: storage.NameIndex | None = None) -> str | None:
        """The id of a root image's base in storage; None when it must be bootstrapped or pulled."""
        return self._stored_id(image.base.image, index)

    def _stored_id(self, ref: str, index: storage.NameIndex | None) -> str | None:
        if index is not None and (found_id := index.id_of(ref)):
            return found_id
        found = storage.inspect(self.host, ref)
        return found.id if found else None

    def _published_base_id(self, image: OutputImage) -> str | None:
        """A root's base id as recorded by the image stored under its first tag (the base-digest
        label every build sets): a root pulled from a registry is judged without its base in
        storage, so a CI job or a fresh machine with the pulled images bootstraps nothing. Only
        building the root needs the base itself."""
        found = storage.inspect(self.host, full_tags(image, self.options.prefix)[0])
        label = found.labels.get(BASE_DIGEST_LABEL, "") if found else ""
        return label.removeprefix("sha256:") or None

    def _decide(self, image: OutputImage, parent_id: str | None, index: storage.NameIndex | None = None) -> Decision:
        if image.parent:
            base_id: str | None = ""
        else:
            parent_id, base_id = "", self.base_id(image, index) or self._published_base_id(image)
        prefix = self.options.prefix
        tags = full_tags(image, prefix)

        def build_id_exists(tag: str) -> bool:
            return self._stored_id(f"{prefix}/{image.repo}:{tag}", index) is not None

        def tags_in_place(tag: str) -> bool:
            ref = f"{prefix}/{image.repo}:{tag}"
            if index is not None and (found_id := index.id_of(ref)) and set(tags) <= set(index.names[found_id]):
                return True
            found = storage.inspect(self.host, ref)
            return found is not None and set(tags) <= set(found.names)

        record = read_record(self.host.state_dir, image.name)
        return decide(
            self.files_hash(image.name), parent_id, base_id, record, build_id_exists, tags_in_place, image.platform
        )

    # -- planning ------------------------------------------------------------------------------

    def plan(self, names: list[str]) -> list[PlannedImage]:
        """What a build of names would do, without building; ancestors that are up to date are
        listed as skipped so the plan shows the whole chain. Storage is read once for all."""
        index = storage.name_index(self.host)
        planned: dict[str, PlannedImage] = {}
        ids: dict[str, str | None] = {}
        for name in self.closure(names):
            image = self.images[name]
            parent_id = ids.get(image.parent) if image.parent else ""
            decision = self._decide(image, parent_id, index)
            ids[name] = None
            if decision.action != "build":
                ids[name] = self._stored_id(f"{self.options.prefix}/{image.repo}:{decision.build_id}", index)
            planned[name] = PlannedImage(
                name,
                decision.action,
                decision.reasons,
                decision.key,
                decision.build_id,
                full_tags(image, self.options.prefix),
                image.parent,
                ids[name],
            )
        return list(planned.values())

    def platform_problems(self, names: list[str]) -> list[Check]:
        """What this host lacks for the foreign platforms a build of names will build (qemu, and
        arch-test where a rootfs is bootstrapped), found before anything starts; a native-only
        build asks nothing."""
        units = [self.images[n] for n in self.closure(names)]
        if all(self.platform_of(u.name) == self.host_platform for u in units):
            return []
        building = {p.name for p in self.plan(names) if p.action == "build"}
        return build_problems(
            [u for u in units if u.name in building],
            self.host_platform,
            base_stored=lambda unit: self.base_id(unit) is not None,
        )

    # -- building ------------------------------------------------------------------------------

    def build(
        self,
        names: list[str],
        *,
        fresh: Collection[str] = (),
        stored_ancestors: bool = False,
        after_image: ImageGate | None = None,
    ) -> BuildReport:
        """Build names and their missing or stale ancestors, up to options.jobs at a time.

        fresh: images (by spec name) built again from the same inputs, every layer and a
        bootstrapped rootfs too, whatever storage says (the scheduled rebuild's refresh for newer
        packages). stored_ancestors: an ancestor not named is used as stored under its first tag,
        not decided (the scheduled rebuild decides staleness from the lock). after_image(name,
        built): called once per named image when all its platforms are built, before any child
        starts; a GenError from it fails the image and skips its children.
        Raises Interrupted on cancel, after running tools are stopped."""
        order = self.closure(names)
        gated = ({self.images[n].repo for n in order} if not names else set(names)) if after_image else set()
        run = _Run(order, {u.name for n in fresh for u in units_of(self.images, n)}, after_image, gated)
        if stored_ancestors and names:  # no names: every image is named
            run.requested = {u.name for n in names for u in units_of(self.images, n)}
        planned = {p.name: p for p in self.plan(names)}
        running: _Running = {}
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            while run.pending or running or run.waiting:
                self._start_ready(run, planned, pool, running)
                if not running:
                    break
                finished, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                # In dependency order, so the report does not depend on thread timing.
                for future in sorted(finished, key=lambda f: run.position(self.images, running[f][0])):
                    name, is_gate = running.pop(future)
                    self._finish(name, is_gate, future, run)
        if self.cancel.is_set:
            raise Interrupted(
                "interrupted: images finished before the signal keep their new tags; the rest keep their previous ones"
            )
        return run.report

    def _start(self, name: str, run: _Run, planned: PlannedImage, pool: ThreadPoolExecutor, running: _Running) -> None:
        """Take a ready unit: as stored, skipped as planned, or built on a worker."""
        parent = self.images[name].parent
        if run.requested is not None and name not in run.requested:
            self._take_stored(name, run)
        elif name not in run.fresh and self._up_to_date(planned, run.unchanged):
            run.unchanged.add(name)
            run.built(self.images, name, self._skip(planned))
        else:
            future = pool.submit(self.build_one, name, run.done.get(parent or "", ""), fresh=name in run.fresh)
            running[future] = (name, False)

    def _start_ready(
        self, run: _Run, planned: dict[str, PlannedImage], pool: ThreadPoolExecutor, running: _Running
    ) -> None:
        """Start every unit and gate that can start; a skip makes its children ready at once."""
        while True:
            starting, dropped = run.ready(self.images, self.cancel.is_set)
            for name, why in dropped:
                self._emit(name, Phase.SKIPPED, message=why)
            for name in starting:
                self._start(name, run, planned[name], pool, running)
            for image, built in [] if self.cancel.is_set else run.gates_due(self.images):
                assert run.after_image is not None
                running[pool.submit(run.after_image, image, built)] = (image, True)
            if not (starting or dropped):
                return

    def _take_stored(self, name: str, run: _Run) -> None:
        image = self.images[name]
        ref = full_tags(image, self.options.prefix)[0]
        found = storage.inspect(self.host, ref)
        if found is None:
            message = f"{ref} is not in the storage gen uses; run `gen build` or `gen pull` first"
            run.fail(self.images, BuildFailed(name, "", f"{name}: {message}", [], None))
            self._emit(name, Phase.FAILED, message=message)
        else:
            run.done[name] = found.id

    def _finish(self, name: str, is_gate: bool, future: Future, run: _Run) -> None:
        try:
            result = future.result()
        except BuildFailed as exc:
            run.fail(self.images, exc)
            self._emit(name, Phase.FAILED, exc.step, message=str(exc))
        except Interrupted:
            run.fail(self.images, None, name)
        except GenError as exc:
            step = "after build" if is_gate else ""
            tail, log = getattr(exc, "tail", []), getattr(exc, "log", None)
            run.fail(self.images, BuildFailed(name, step, f"{name}: {exc}", tail, log))
            self._emit(name, Phase.FAILED, step, message=str(exc))
        else:
            if is_gate:
                run.passed(name)
            else:
                run.built(self.images, name, result)

    @staticmethod
    def _up_to_date(planned: PlannedImage, unchanged: set[str]) -> bool:
        """The plan's skip still holds when the parent was skipped too (its id is the planned one)."""
        return (
            planned.action == "skip"
            and planned.image_id is not None
            and (planned.parent is None or planned.parent in unchanged)
        )

    def _skip(self, planned: PlannedImage) -> BuiltImage:
        assert planned.image_id is not None and planned.build_id is not None  # up to date: both exist
        self._emit(planned.name, Phase.SKIPPED, message=", ".join(planned.reasons))
        return BuiltImage(
            planned.name, "skipped", planned.reasons, planned.image_id, planned.build_id, planned.tags, 0.0, None
        )

    def build_one(self, name: str, parent_id: str, *, fresh: bool = False) -> BuiltImage:
        """Build one image FROM parent_id (its parent's id; ignored for a root). fresh: build it
        again from the same inputs, every layer and a bootstrapped root's rootfs too (the scheduled
        rebuild's refresh for newer packages), whatever the build record says."""
        image = self.images[name]
        started = time.monotonic()
        if not image.parent:
            self._ensure_base(image, fresh=fresh)
        decision = self._decide(image, parent_id if image.parent else "")
        if fresh:
            decision = replace(decision, action="build", reasons=("fresh: every layer built again",))
        assert decision.key is not None and decision.build_id is not None
        tags = full_tags(image, self.options.prefix)
        build_ref = f"{self.options.prefix}/{image.repo}:{decision.build_id}"
        self._emit(name, Phase.PLANNED, message=f"{decision.action}: {', '.join(decision.reasons)}")
        if decision.action == "skip":
            found = storage.inspect(self.host, build_ref)
            assert found is not None
            self._emit(name, Phase.SKIPPED, message=", ".join(decision.reasons))
            return BuiltImage(name, "skipped", decision.reasons, found.id, decision.build_id, tags, 0.0, None)
        if decision.action == "retag":
            found = storage.inspect(self.host, build_ref)
            assert found is not None
            storage.tag(self.host, found.id, list(tags))
            self._emit(name, Phase.TAGGED, elapsed=time.monotonic() - started, message=found.id)
            return BuiltImage(
                name, "retagged", decision.reasons, found.id, decision.build_id, tags, time.monotonic() - started, None
            )
        base_ref_id = parent_id if image.parent else self.base_id(image)
        assert base_ref_id
        image_id, log = self._run_build(image, base_ref_id, started, fresh=fresh)
        self.cancel.check()  # a signal during the build's last moments: leave the new id untagged
        storage.tag(self.host, image_id, [build_ref, *tags])
        write_record(
            self.host.state_dir,
            name,
            BuildRecord(
                files_sha256=self.files_hash(name),
                parent_id=parent_id if image.parent else "",
                base_id="" if image.parent else base_ref_id,
                key=decision.key,
                image_id=image_id,
            ),
        )
        elapsed = time.monotonic() - started
        self._emit(name, Phase.TAGGED, elapsed=elapsed, message=image_id)
        return BuiltImage(name, "built", decision.reasons, image_id, decision.build_id, tags, elapsed, log)

    def _ensure_base(self, image: OutputImage, *, fresh: bool = False) -> None:
        kind = image.base_kind
        ref = image.base.image
        if kind != "bootstrap" and image.platform and image.platform != self.host_platform:
            raise GenError(
                f"{image.name}: building {image.platform} needs a bootstrapped base: a registry or "
                f"local base is used as stored, for one platform; set base.bootstrap in {image.spec} "
                "or build this image for the host's platform only"
            )
        if kind == "bootstrap":
            with self._bootstrap_lock:
                bootstrap_base(self.host, image, self.cancel, lambda event: self.on_event(event), fresh=fresh)
        elif storage.inspect(self.host, ref) is None:
            if kind == "image":
                self._pull(image, ref)
            else:
                raise GenError(
                    f"{image.name}: base image {ref} is not in local storage; load it first "
                    f"(podman load / podman pull) or change base.local in {image.spec}"
                )

    def _pull(self, image: OutputImage, ref: str) -> None:
        self.host.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.host.logs_dir / f"{image.name}.pull.log"
        with log_path.open("w") as log:
            code, tail = run_logged(
                ["buildah", *self.host.global_flags(), "pull", ref], self.host.env, log, self.cancel
            )
        if code != 0:
            raise BuildFailed(
                image.name,
                "pull",
                f"{image.name}: pulling base {ref} failed (exit {code}); "
                "check registry access or use a bootstrap/local base; run `gen doctor`",
                tail,
                log_path,
            )

    def build_argv(
        self,
        image: OutputImage,
        base_id: str,
        iidfile: Path,
        extra_args: list[str] | None = None,
        *,
        fresh: bool = False,
    ) -> list[str]:
        epoch = str(image.source_date_epoch)
        tool = self.options.backend
        argv = [
            tool,
            *(self.host.podman_flags() if tool == "podman" else self.host.global_flags()),
            "bud" if tool == "buildah" else "build",
            "--isolation",
            "chroot",
            "--layers",
            "--format",
            image.image_format,
            "--pull=never",
        ]
        if fresh:
            argv.append("--no-cache")
        elif self.options.layer_cache:
            # Steps another machine already ran come from the registry; new ones go back to it.
            argv += [
                "--cache-from",
                self.options.layer_cache,
                "--cache-to",
                self.options.layer_cache,
                f"--tls-verify={'true' if self.options.layer_cache_tls_verify else 'false'}",
            ]
        version = tool_version(tool, self.host.env).version or (0,)
        if tool == "buildah" and version >= SOURCE_DATE_EPOCH_FLAGS_SINCE:
            argv += ["--source-date-epoch", epoch, "--rewrite-timestamp"]
        else:
            argv += ["--timestamp", epoch]
        if image.platform:
            # A foreign platform's RUN steps execute under qemu user emulation (`gen doctor`).
            argv += ["--platform", image.platform]
            argv += [f"--build-arg={k}={v}" for k, v in image.build_args_for(image.platform)]
        # The base digest is a --label, not a Dockerfile ARG: buildah before 1.29 reads no registry
        # layer cache after an ARG step (buildah#4315), and a partly cached build records the cache's
        # name in its history, so only a build cached whole gives the image the first runner made.
        argv += [
            "--build-arg",
            f"BASE_IMAGE={base_id}",
            "--label",
            f"{BASE_DIGEST_LABEL}=sha256:{base_id}",
            *(extra_args or []),
            "--iidfile",
            str(iidfile),
            "-f",
            str(image.directory / "Dockerfile"),
            str(image.directory),
        ]
        return argv

    def _run_build(self, image: OutputImage, base_id: str, started: float, *, fresh: bool = False) -> tuple[str, Path]:
        self.host.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.host.logs_dir / f"{image.name}.log"
        iidfile = self.host.state_dir / "tmp" / f"{image.name}.iid"
        iidfile.parent.mkdir(parents=True, exist_ok=True)
        iidfile.unlink(missing_ok=True)
        step = "start"
        self._emit(image.name, Phase.STARTED, elapsed=time.monotonic() - started)

        def on_line(line: str) -> None:
            nonlocal step
            if _STEP.match(line):
                step = line
                self._emit(image.name, Phase.STEP, line, time.monotonic() - started)

        with log_path.open("w") as log, served_directories(image.served_dirs, self.project_root) as served:
            code, tail = run_logged(
                self.build_argv(image, base_id, iidfile, served, fresh=fresh),
                self.host.env,
                log,
                self.cancel,
                on_line=on_line,
                cwd=image.directory,
            )
        if code != 0 or not iidfile.is_file():
            raise BuildFailed(
                image.name, step, _failure_message(image.name, step, code, tail, log_path), tail, log_path
            )
        image_id = iidfile.read_text().strip().removeprefix("sha256:")
        iidfile.unlink()
        if image.image_format == "docker":
            image_id = make_reproducible(self.host, image_id, iidfile.with_suffix(".config"))
        return image_id, log_path

    def _emit(self, name: str, phase: Phase, step: str = "", elapsed: float = 0.0, message: str = "") -> None:
        self.on_event(BuildEvent(name, phase, step, elapsed, message))


def _failure_message(name: str, step: str, code: int, tail: list[str], log: Path) -> str:
    lines = "\n".join(f"  | {line}" for line in tail[-15:])
    text = f"{name}: build failed at {step} (exit {code})\n{lines}\n  full log: {log}"
    if any(marker in line.lower() for line in tail for marker in _HOST_PROBLEMS):
        text += "\n  this looks like a problem of the host, not the spec: run `gen doctor`"
    return text
