"""`gen rebuild`: the scheduled job. Decide which images are stale and why, rebuild exactly those in
dependency order, verify, push, update the lock, report.

Stale because
  (a) base-moved: the image it is built on changed in the registry (a parent published there by
      someone else under the same tag is adopted: pulled, not rebuilt; a registry base's tag moved);
  (b) packages: the package index offers newer versions of installed packages;
  (c) changed: its rendered spec, templates or overlays differ from the lock (an image not in
      the lock yet is recorded as it is, not rebuilt);
  (d) parent-rebuilt: its parent is rebuilt or adopted in this run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from generator.builder import storage
from generator.builder.decide import Reason
from generator.builder.doctor import require_platforms
from generator.builder.engine import Builder, BuildOptions, BuildReport, BuiltImage
from generator.builder.events import BuildEvent, EventHandler, Phase, ignore_event
from generator.builder.host import Host, host_platform
from generator.builder.outputs import (
    OutputImage,
    files_sha256,
    image_units,
    platform_suffix,
    topological_order,
)
from generator.builder.proc import Cancel, Interrupted
from generator.errors import GenError, UsageError
from generator.files import write_text_atomic
from generator.publish.attach import attach_sbom
from generator.publish.policy import PullGate, policy_in_effect
from generator.publish.signing import Signer
from generator.publish.skopeo import Skopeo
from generator.publish.target import Registry, is_loopback
from generator.publish.transfer import push_image
from generator.rebuild.lock import Lock, LockedImage, locked_image, package_changes, read_lock, write_lock
from generator.rebuild.provenance import attest_pushed, utc_now
from generator.rebuild.sbom import write_sboms
from generator.rebuild.updates import Update, apt_source, available_updates
from generator.render.templates import TemplateSet

# The build stage's vocabulary, by code: base-moved, packages, changed, parent-rebuilt.
BASE_MOVED, PACKAGES, CHANGED, PARENT_REBUILT = (
    r.code for r in (Reason.BASE_MOVED, Reason.PACKAGES, Reason.CHANGED, Reason.PARENT_REBUILT)
)
EXIT_NOTHING, EXIT_REBUILT, EXIT_FAILED = 0, 3, 1


@dataclass
class Verdict:
    """One image's decision: rebuild (reasons non-empty), adopt (pull a changed registry image), or keep."""

    name: str
    reasons: list[dict] = field(default_factory=list)  # {"code": ..., "detail": ...}
    updates: list[dict] = field(default_factory=list)
    adopt_digest: str = ""

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    def add(self, code: str, detail: str) -> None:
        self.reasons.append({"code": code, "detail": detail})

    @property
    def codes(self) -> set[str]:
        return {r["code"] for r in self.reasons}


@dataclass
class Outcome:
    name: str
    action: str  # rebuilt, adopted, failed, skipped-after-failure
    reasons: list[dict]
    old_digest: str
    new_digest: str
    old_image_id: str
    new_image_id: str
    verify: str  # passed, failed: ..., unavailable, skipped
    package_changes: list[dict] = field(default_factory=list)
    error: str = ""


@dataclass
class RebuildContext:
    host: Host
    project: Path
    images: dict[str, OutputImage]
    prefix: str
    registry: Registry | None
    check_packages: bool = True
    verify: bool = True
    on_event: EventHandler = ignore_event  # the builder's events and the rebuild's own steps
    cancel: Cancel = field(default_factory=Cancel)
    signer: Signer | None = None  # signs every manifest pushed (GEN_SIGNING_KEY)

    def note(self, image: str, phase: Phase, message: str) -> None:
        self.on_event(BuildEvent(image, phase, message=message))


def _registry_digest(ctx: RebuildContext, skopeo: Skopeo, name: str) -> str | None:
    assert ctx.registry is not None
    image = ctx.images[name]
    return skopeo.digest(f"{ctx.registry.repository(name)}:{image.tags[0]}", ctx.registry.tls_verify)


def _base_tag_digest(ctx: RebuildContext, skopeo: Skopeo, ref: str) -> str | None:
    """The digest a pinned registry base's tag points at now (ref is repo:tag@sha256:...)."""
    by_tag = ref.split("@", 1)[0]
    host = by_tag.split("/", 1)[0]
    insecure = ctx.registry is not None and not ctx.registry.tls_verify and is_loopback(host)
    return skopeo.digest(by_tag, not insecure)


def assess(ctx: RebuildContext, lock: Lock) -> list[Verdict]:
    """Verdicts for every rendered image, parents first."""
    skopeo = Skopeo(ctx.host)
    verdicts: dict[str, Verdict] = {}
    lists_cache = ctx.host.cache_dir / "apt-lists"
    for name in topological_order(ctx.images):
        image, verdict = ctx.images[name], Verdict(name)
        verdicts[name] = verdict
        locked = lock.images.get(name)
        local = storage.inspect(ctx.host, f"{ctx.prefix}/{name}:{image.tags[0]}")
        # (c) rendered inputs
        if locked is not None and locked.files_sha256 != files_sha256(image.directory):
            verdict.add(CHANGED, "spec, templates or overlays changed since the lock")
        # (a) the registry
        if ctx.registry is not None and locked is not None and locked.digest:
            now = _registry_digest(ctx, skopeo, name)
            if now and now != locked.digest and not verdict.stale:
                verdict.adopt_digest = now
        if not image.parent and image.base_kind == "image" and locked is not None:
            pinned = locked.base.digest or ""
            now = _base_tag_digest(ctx, skopeo, image.base.image)
            if now and pinned and now != pinned:
                verdict.add(
                    BASE_MOVED,
                    f"base tag {image.base.image.split('@')[0]} now names {now}, "
                    f"the spec pins {pinned}: update base.image in {image.spec}",
                )
        # (d) the parent
        parent = verdicts.get(image.parent or "")
        if parent is not None and parent.adopt_digest:
            verdict.add(
                BASE_MOVED,
                f"parent {parent.name} changed in the registry: "
                f"{lock.images[parent.name].digest} -> {parent.adopt_digest}",
            )
        elif parent is not None and parent.stale:
            verdict.add(PARENT_REBUILT, f"parent {parent.name} is rebuilt")
        if local is None and not verdict.stale and not verdict.adopt_digest:
            verdict.add(CHANGED, f"{ctx.prefix}/{name}:{image.tags[0]} is not in the storage gen uses")
        # (b) packages, only where nothing else already forces the rebuild
        if ctx.check_packages and not verdict.stale and not verdict.adopt_digest and local is not None:
            source = apt_source(ctx.images, name, ctx.host.env)
            if source is not None:
                _check_packages(ctx, image, source, lists_cache, verdict)
    return [verdicts[n] for n in topological_order(ctx.images)]


def _check_packages(
    ctx: RebuildContext, image: OutputImage, source: tuple[str, str, str], lists_cache: Path, verdict: Verdict
) -> None:
    """(b) for every platform's image in storage: one with updates makes the image stale (all its
    platforms are rebuilt, as for any reason). Each platform keeps apt lists of its own."""
    found: dict[tuple[str, str, str], tuple[Update, list[str]]] = {}  # (package, old, new) -> platforms
    for unit in image_units(image, host_platform()):
        ref = f"{ctx.prefix}/{unit.repo}:{unit.tags[0]}"
        if unit.platform and not storage.exists(ctx.host, ref):
            ctx.note(unit.name, Phase.CHECK, "not in storage: its packages are not checked")
            continue
        ctx.note(unit.name, Phase.CHECK, "checking for package updates")
        cache = lists_cache / platform_suffix(unit.platform) if unit.platform else lists_cache
        for update in available_updates(ctx.host, ref, source, cache, unit.platform or None):
            found.setdefault((update.package, update.old, update.new), (update, []))[1].append(unit.platform)
    verdict.updates = [
        asdict(u) | {"security": u.security, "platforms": [p for p in platforms if p]}
        for u, platforms in found.values()
    ]
    if verdict.updates:
        security = sum(u["security"] for u in verdict.updates)
        shown = [
            f"{u['package']} {u['old']} -> {u['new']}" + (f" ({', '.join(u['platforms'])})" if u["platforms"] else "")
            for u in verdict.updates[:8]
        ]
        verdict.add(
            PACKAGES,
            f"{len(verdict.updates)} package update(s), {security} security: "
            + ", ".join(shown)
            + (" ..." if len(verdict.updates) > 8 else ""),
        )


def _verify(ctx: RebuildContext, ref: str) -> str:
    if not ctx.verify:
        return "skipped"
    try:
        from generator.verify import verify_image
    except ImportError:
        return "verify unavailable"
    results = verify_image(ctx.host, ref)
    failed = [r for r in results if not r.passed]
    if failed:
        return "failed: " + "; ".join(f"{r.name}: {r.detail}" for r in failed)
    return "passed"


def _adopt(ctx: RebuildContext, name: str, digest: str) -> str:
    """Pull the registry's image under the first tag into storage with the spec's tags, admitted
    by the containers policy as `gen pull` admits it; its id."""
    assert ctx.registry is not None
    image = ctx.images[name]
    first = f"{ctx.prefix}/{name}:{image.tags[0]}"
    skopeo = Skopeo(ctx.host)
    with PullGate(policy_in_effect(None, ctx.project, dict(os.environ))) as gate:
        policy = gate.admit(ctx.registry, name, image.tags[0], digest, skopeo)
        skopeo.pull_ref(f"{ctx.registry.repository(name)}@{digest}", ctx.registry.tls_verify, first, policy)
    found = storage.inspect(ctx.host, first)
    if found is None:
        raise GenError(f"{name}: {first} missing right after pulling {digest}")
    storage.tag(ctx.host, found.id, [f"{ctx.prefix}/{name}:{t}" for t in image.tags[1:]])
    return found.id


def run_rebuild(ctx: RebuildContext, verdicts: list[Verdict], lock: Lock) -> list[Outcome]:
    """Adopt what the verdicts adopt, then ask the builder for every stale image at once: parents
    first, fresh (every layer again) where only packages moved, each built image verified, pushed
    and locked before its children build; a branch stops at its first failure."""
    outcomes: dict[str, Outcome] = {}
    for verdict in verdicts:
        if verdict.adopt_digest:
            outcomes[verdict.name] = _adopt_outcome(ctx, verdict, lock)
    blocked = _blocked(ctx, verdicts, outcomes, lock)
    stale = {v.name: v for v in verdicts if v.stale and v.name not in outcomes and v.name not in blocked}
    if stale:
        _build(ctx, stale, lock, outcomes)
    return [outcomes[v.name] for v in verdicts if v.name in outcomes]


def _old(lock: Lock, name: str) -> tuple[str, str]:
    """The locked image's digest and id, or empty ones for an image not locked yet."""
    locked = lock.images.get(name)
    return (locked.digest, locked.image_id) if locked else ("", "")


def _failed(verdict: Verdict, lock: Lock, action: str, error: str) -> Outcome:
    old_digest, old_id = _old(lock, verdict.name)
    return Outcome(verdict.name, action, verdict.reasons, old_digest, "", old_id, "", "skipped", error=error)


def _adopt_outcome(ctx: RebuildContext, verdict: Verdict, lock: Lock) -> Outcome:
    name, locked = verdict.name, lock.images.get(verdict.name)
    old_digest, old_id = _old(lock, name)
    ctx.note(name, Phase.ADOPT, f"pulling {verdict.adopt_digest} from the registry")
    image_id = _adopt(ctx, name, verdict.adopt_digest)
    lock.images[name] = locked_image(ctx.host, ctx.images, name, ctx.prefix, verdict.adopt_digest)
    return Outcome(
        name,
        "adopted",
        [{"code": BASE_MOVED, "detail": "published in the registry under the same tag"}],
        old_digest,
        verdict.adopt_digest,
        old_id,
        image_id,
        "skipped",
        package_changes(locked.packages if locked else {}, lock.images[name].packages),
    )


def _blocked(ctx: RebuildContext, verdicts: list[Verdict], outcomes: dict[str, Outcome], lock: Lock) -> set[str]:
    """Stale roots whose registry base's tag moved (the spec's pin must change first) fail without
    a build, and their descendants are skipped."""
    blocked: set[str] = set()
    for verdict in verdicts:  # parents first
        image = ctx.images[verdict.name]
        if image.parent in blocked:
            blocked.add(verdict.name)
            if verdict.stale and verdict.name not in outcomes:
                error = f"parent {image.parent} failed"
                outcomes[verdict.name] = _failed(verdict, lock, "skipped-after-failure", error)
        elif not image.parent and any(r["code"] == BASE_MOVED for r in verdict.reasons):
            blocked.add(verdict.name)
            outcomes[verdict.name] = _failed(verdict, lock, "failed", verdict.reasons[0]["detail"])
    return blocked


def _build(ctx: RebuildContext, stale: dict[str, Verdict], lock: Lock, outcomes: dict[str, Outcome]) -> None:
    """One builder run over the stale images; publishing is its gate, so a child builds only on a
    parent that passed verify and was pushed."""
    builder = Builder(
        ctx.host,
        ctx.project / "output",
        ctx.project,
        BuildOptions(prefix=ctx.prefix),
        on_event=ctx.on_event,
        cancel=ctx.cancel,
    )
    fresh = [n for n, v in stale.items() if v.codes == {PACKAGES}]  # same inputs, newer packages

    def publish(name: str, built: list[BuiltImage]) -> None:
        try:
            outcomes[name] = _publish(ctx, stale[name], built, lock)
        except GenError as exc:
            outcomes[name] = _failed(stale[name], lock, "failed", str(exc))
            raise

    for name, verdict in stale.items():
        ctx.note(name, Phase.PLANNED, f"rebuilding: {', '.join(r['code'] for r in verdict.reasons)}")
    try:
        report = builder.build(list(stale), fresh=fresh, stored_ancestors=True, after_image=publish)
    except Interrupted as exc:
        for verdict in stale.values():
            outcomes.setdefault(verdict.name, _failed(verdict, lock, "failed", str(exc)))
        return
    _record_failures(builder, report, stale, lock, outcomes)


def _record_failures(
    builder: Builder, report: BuildReport, stale: dict[str, Verdict], lock: Lock, outcomes: dict[str, Outcome]
) -> None:
    """Outcomes for the stale images the build report says failed or were skipped after a failure
    (a publish failure has recorded its own). An ancestor the rebuild did not name fails only when
    it is missing from storage: its children fail with that message."""
    errors: dict[str, str] = {}
    for failure in report.failed:
        image = builder.images[failure.image].repo if failure.image in builder.images else failure.image
        errors.setdefault(image, str(failure))
        if image in stale:
            outcomes.setdefault(image, _failed(stale[image], lock, "failed", str(failure)))
    for unit in report.skipped_after_failure:
        name, parent = builder.images[unit].repo, builder.images[unit].parent
        parent_image = builder.images[parent].repo if parent else name
        if parent_image not in stale and parent_image in errors:
            outcomes.setdefault(name, _failed(stale[name], lock, "failed", errors[parent_image]))
        else:
            outcomes.setdefault(
                name, _failed(stale[name], lock, "skipped-after-failure", f"parent {parent_image} failed")
            )


def _publish(ctx: RebuildContext, verdict: Verdict, built: list[BuiltImage], lock: Lock) -> Outcome:
    """Verify every platform's image just built, push them, lock and describe the result."""
    name, image = verdict.name, ctx.images[verdict.name]
    locked = lock.images.get(name)
    old_digest, old_id = _old(lock, name)
    ids = {b.name: b.image_id for b in built}
    for unit in built:  # a foreign platform's image is verified under emulation
        ctx.note(unit.name, Phase.VERIFY, "verifying")
        verified = _verify(ctx, unit.tags[0])
        if verified.startswith("failed"):
            raise GenError(f"{unit.name}: rebuilt as {unit.image_id[:12]} but verify {verified}")
    digest, platform_digests = "", {}
    if ctx.registry is not None:
        ctx.note(name, Phase.PUSH, f"pushing to {ctx.registry}")
        started = utc_now()
        pushed = push_image(ctx.host, image, ctx.prefix, ctx.registry, signer=ctx.signer)
        if ctx.signer is not None:
            attest_pushed(ctx.host, ctx.images, pushed, ctx.prefix, ctx.registry, ctx.signer, dict(os.environ), started)
        digest, platform_digests = pushed.digest, dict(pushed.platforms)
    entry = locked_image(ctx.host, ctx.images, name, ctx.prefix, digest)
    lock.images[name] = entry
    _sbom(ctx, name, entry)
    if ctx.registry is not None:  # each SBOM beside its own image: per platform when there are several
        units = {u.name: u for u in image_units(image, host_platform())}
        for unit_name, image_id in ids.items():
            attach_sbom(
                Skopeo(ctx.host),
                ctx.project / "output",
                name,
                image_id,
                platform_digests.get(units[unit_name].platform, digest),
                ctx.registry,
                unit_name,
            )
    main = next((b for b in built if b.name == name), built[0])
    if main.action == "built":
        action = "rebuilt"
    else:  # the build found it built already (by hand, or a reproducible parent rebuild)
        action = "unchanged" if (main.image_id, digest) == (old_id, old_digest or digest) else "updated"
    return Outcome(
        name,
        action,
        verdict.reasons,
        old_digest,
        digest,
        old_id,
        main.image_id,
        verified,
        package_changes(locked.packages if locked else {}, entry.packages),
    )


def _sbom(ctx: RebuildContext, name: str, entry: LockedImage) -> None:
    write_sboms(ctx.host, ctx.project / "output", ctx.images, name, ctx.prefix, entry.digest)


def exit_code(outcomes: list[Outcome]) -> int:
    if any(o.action in ("failed", "skipped-after-failure") for o in outcomes):
        return EXIT_FAILED
    return EXIT_REBUILT if any(o.action in ("rebuilt", "adopted", "updated") for o in outcomes) else EXIT_NOTHING


def report_data(
    verdicts: list[Verdict], outcomes: list[Outcome], dry_run: bool, registry: Registry | None, started: float
) -> dict:
    return {
        "dry_run": dry_run,
        "registry": str(registry) if registry else None,
        "seconds": round(time.monotonic() - started, 1),
        "decisions": [
            {
                "name": v.name,
                "stale": v.stale,
                "adopt": v.adopt_digest or None,
                "reasons": v.reasons,
                "package_updates": v.updates,
            }
            for v in verdicts
        ],
        "results": [asdict(o) for o in outcomes],
        "exit_code": exit_code(outcomes)
        if not dry_run
        else (EXIT_REBUILT if any(v.stale or v.adopt_digest for v in verdicts) else EXIT_NOTHING),
    }


def read_plan(path: Path) -> dict:
    """A plan job's `gen rebuild --dry-run --json` output, or one clear line."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not data.get("dry_run") or not isinstance(data.get("decisions"), list):
            raise ValueError("no dry-run decisions in it")
        for d in data["decisions"]:
            if not (isinstance(d, dict) and isinstance(d.get("name"), str) and isinstance(d.get("reasons"), list)):
                raise ValueError("a decision without name or reasons")
            if not {"stale", "adopt"} <= d.keys():
                raise ValueError(f"decision {d['name']!r} lacks stale or adopt")
    except (OSError, ValueError, RecursionError) as exc:
        raise UsageError(f"--plan {path}: not the output of `gen rebuild --dry-run --json` ({exc})") from None
    return data


def pipeline_report(plan: dict, before: Lock, after: Lock, registry: str | None) -> dict:
    """The report of a run split into CI jobs (`gen ci`): the decisions of its plan job (a
    `gen rebuild --dry-run --json`), and for each image the plan named, what the level jobs left in
    the lock. Those jobs verified each image before pushing it (a failure stops the pipeline before
    the lock job), so every image found changed in the lock passed."""
    outcomes = []
    for decision in plan["decisions"]:
        if not (decision["stale"] or decision["adopt"]):
            continue
        old, new = before.images.get(decision["name"]), after.images.get(decision["name"])
        if new is None:
            action, verified = "failed", "unavailable"
        elif old is not None and (new.image_id, new.digest) == (old.image_id, old.digest):
            action, verified = "unchanged", "passed"
        else:
            action, verified = ("adopted" if decision["adopt"] else "rebuilt"), "passed"
        outcomes.append(
            Outcome(
                decision["name"],
                action,
                decision["reasons"],
                old.digest if old else "",
                new.digest if new else "",
                old.image_id if old else "",
                new.image_id if new else "",
                verified,
                package_changes(old.packages if old else {}, new.packages if new else {}),
            )
        )
    data = {**plan, "dry_run": False, "ci": True, "registry": registry, "results": [asdict(o) for o in outcomes]}
    data["exit_code"] = exit_code(outcomes)
    return data


def report_markdown(data: dict) -> str:
    """The report as Markdown; its text is templates/reports/rebuild.md.j2."""
    decisions = [
        {
            "name": d["name"],
            "decision": "adopt" if d["adopt"] else ("rebuild" if d["stale"] else "up to date"),
            "why": ("; ".join(f"({r['code']}) {r['detail']}" for r in d["reasons"]) or "-").replace("|", "/"),
        }
        for d in data["decisions"]
    ]
    return TemplateSet().render("reports/rebuild.md.j2", data=data, decisions=decisions)


def write_report(directory: Path, data: dict) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "rebuild-report.json", directory / "rebuild-report.md"
    write_text_atomic(json_path, json.dumps(data, indent=2) + "\n")
    write_text_atomic(md_path, report_markdown(data))
    return json_path, md_path


def rebuild(ctx: RebuildContext, dry_run: bool) -> dict:
    """The whole job; returns the report data (its exit_code says what happened)."""
    started = time.monotonic()
    lock = read_lock(ctx.project)
    verdicts = assess(ctx, lock)
    outcomes: list[Outcome] = []
    if not dry_run:
        # A foreign platform the host cannot build would fail minutes in, after other images.
        require_platforms(
            [u for v in verdicts if v.stale for u in image_units(ctx.images[v.name], host_platform())],
            host_platform(),
            base_stored=lambda unit: storage.exists(ctx.host, unit.base.image),
        )
        outcomes = run_rebuild(ctx, verdicts, lock)
        if ctx.registry is not None:
            lock.registry = str(ctx.registry)
        for name in topological_order(ctx.images):  # first run: record what is there
            if name not in lock.images and storage.exists(ctx.host, f"{ctx.prefix}/{name}:{ctx.images[name].tags[0]}"):
                lock.images[name] = locked_image(ctx.host, ctx.images, name, ctx.prefix)
        write_lock(ctx.project, lock)
        if ctx.cancel.is_set:
            raise Interrupted("interrupted: gen.lock has what was pushed before the signal; run again for the rest")
    return report_data(verdicts, outcomes, dry_run, ctx.registry, started)
