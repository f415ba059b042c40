"""Verify stage: run an image with podman and check that its init layer behaves as promised.

Entry points:
- resolve_ref(target, project, prefix, podman): a spec name or an image reference -> image reference;
- read_expectations(podman, ref): what the image should do, from the spec embedded in it;
- verify_image(host, ref, expectations=None) -> list[CheckResult], one per check, in table order.

A check that cannot run (podman fails, the image lacks a shell) is a failed row, never a crash.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from generator.builder.host import Host
from generator.builder.proc import ToolError
from generator.contract import STRUCTURE_TEST
from generator.errors import GenError, UsageError
from generator.verify.checks import CHECKS, Context, Status, Verdict
from generator.verify.expectations import EMBEDDED_SPEC, Expectations, parse_embedded, without_spec
from generator.verify.podman import Podman

__all__ = [
    "CHECKS",
    "CheckResult",
    "Expectations",
    "ImageNotFound",
    "Podman",
    "Status",
    "check_names",
    "read_expectations",
    "resolve_ref",
    "verify_image",
]


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    duration: float  # seconds

    @property
    def passed(self) -> bool:
        """A skipped check (it does not apply to this image) is not a failure."""
        return self.status is not Status.FAIL


class ImageNotFound(UsageError):
    """The reference names no image in the storage gen uses."""


def check_names() -> tuple[str, ...]:
    return tuple(name for name, _ in CHECKS)


def resolve_ref(target: str, project: Path, prefix: str, podman: Podman, platform: str = "") -> str:
    """A spec name becomes `<prefix>/<name>:<first tag>` (as `gen build` tags it; for one platform
    of several, the tag of that platform's image); anything else is taken as an image reference.
    Raises ImageNotFound when storage has no such image."""
    ref = target
    if _looks_like_name(target):
        tags = _spec_tags(project, target)
        if tags:
            from generator.plan import image_ref

            ref = image_ref(target, _platform_tag(project, target, tags[0], platform), prefix)
    if podman.inspect_image(ref) is None:
        hint = (
            f"run `gen build {target}` first"
            if ref != target
            else "check the name with `podman images`, or render and build it first"
        )
        raise ImageNotFound(f"no image {ref!r} in the storage gen uses; {hint}")
    return ref


def _platform_tag(project: Path, name: str, tag: str, platform: str) -> str:
    """The tag `gen build` gives the image of one platform: TAG for the primary one, TAG-SUFFIX else."""
    if not platform:
        return tag
    from generator.builder.host import host_platform
    from generator.builder.outputs import image_units, load_output

    image = load_output(project / "output" / name)
    built = image.platforms or (host_platform(),)
    if platform not in built:
        raise UsageError(
            f"{name} is not built for {platform} (its platforms: {', '.join(built)}); "
            "choose one of those or add it to the spec's platforms"
        )
    return next((u.tags[0] for u in image_units(image, host_platform()) if u.platform == platform), tag)


def _looks_like_name(target: str) -> bool:
    return all(c.isalnum() or c in "._-" for c in target) and target[:1].isalnum()


def _spec_tags(project: Path, name: str) -> tuple[str, ...]:
    """Tags of a rendered image, from its manifest (what `gen build` builds); none when not rendered."""
    from generator.builder.outputs import MANIFEST, load_output

    if (project / "output" / name / MANIFEST).is_file():
        return load_output(project / "output" / name).tags
    return ()


def read_expectations(podman: Podman, ref: str) -> Expectations:
    """The embedded spec, read with the init layer bypassed; schema defaults when it is absent."""
    try:
        got = podman.run(ref, [EMBEDDED_SPEC], entrypoint="cat", timeout=60)
    except ToolError:
        return without_spec()
    found = parse_embedded(got.stdout) if got.code == 0 else None
    return found or without_spec()


def verify_image(
    host: Host,
    ref: str,
    expectations: Expectations | None = None,
    *,
    podman: Podman | None = None,
    only: Iterable[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    output_dir: Path | None = None,
) -> list[CheckResult]:
    """Run every check (or those named in `only`) against the image; results in table order.
    output_dir (the project's output/) holds the image's generated structure test, if any."""
    podman = podman or Podman(host)
    image = podman.inspect_image(ref)
    if image is None:
        raise ImageNotFound(f"no image {ref!r} in the storage gen uses")
    podman.run_platform = foreign_platform(image)
    wanted = set(only) if only is not None else None
    unknown = sorted((wanted or set()) - set(check_names()))
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}; checks: {', '.join(check_names())}")
    expect = expectations or read_expectations(podman, ref)
    podman.run_owned_by_user = run_needs_user_owned_tmpfs(podman.run_platform, expect)
    results = []
    with tempfile.TemporaryDirectory(prefix="gen-verify-") as work:
        config = dict(image.get("Config") or {})
        ctx = Context(podman, ref, expect, config, Path(work), structure_config_for(output_dir, config))
        try:
            for name, check in CHECKS:
                if wanted is not None and name not in wanted:
                    continue
                result = _run_check(name, check, ctx)
                results.append(result)
                if on_result:
                    on_result(result)
        finally:
            ctx.close()
    return results


def run_needs_user_owned_tmpfs(platform: str, expect: Expectations) -> bool:
    """A foreign s6-overlay image under a qemu that ignores setuid: its start-up helper cannot take
    /run as root, so every check would fail on that alone (a fact of this host, not the image)."""
    from generator.builder.doctor import emulation_honours_setuid

    return bool(platform) and expect.init == "s6-overlay" and not emulation_honours_setuid(platform)


def foreign_platform(image: dict) -> str:
    """os/arch[/variant] of an image (podman's inspect data) when it is not the host's, else ""."""
    from generator.builder.host import host_platform

    parts = [str(image.get(k) or "") for k in ("Os", "Architecture", "Variant")]
    platform = "/".join(p for p in parts if p)
    return platform if parts[0] and parts[1] and platform != host_platform() else ""


def structure_config_for(output_dir: Path | None, config: dict) -> Path | None:
    """output/<title>/structure-test.yaml for an image whose OCI title label names a rendered image."""
    title = (config.get("Labels") or {}).get("org.opencontainers.image.title") or ""
    if output_dir is None or not title or "/" in title or title.startswith("."):
        return None
    path = output_dir / title / STRUCTURE_TEST
    return path if path.is_file() else None


def _run_check(name: str, check: Callable[[Context], Verdict], ctx: Context) -> CheckResult:
    start = time.monotonic()
    try:
        verdict = check(ctx)
    except (GenError, OSError) as exc:  # podman failed or timed out: the check cannot pass
        verdict = Verdict(Status.FAIL, f"could not run: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return CheckResult(name, verdict.status, verdict.detail, time.monotonic() - start)
