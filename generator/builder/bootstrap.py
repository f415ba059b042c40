"""Bootstrapping a Debian-family root filesystem with mmdebstrap and importing it as an image.

Reproducible by construction: the mirror (or snapshot) is given explicitly, so mmdebstrap adds no
-updates/-security suites whose content drifts daily; SOURCE_DATE_EPOCH is fixed; customize hooks
replace what would carry the build host into the image; the tarball's own mtime is set to
SOURCE_DATE_EPOCH because `podman import` takes the image's creation time from it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from generator.builder.events import BuildEvent, EventHandler, Phase
from generator.builder.host import Host
from generator.builder.mirror import resolve_mirror, snapshot_url
from generator.builder.outputs import OutputImage
from generator.builder.proc import Cancel, ToolError, run_logged
from generator.builder.storage import StoredImage, inspect
from generator.contract import BootstrapBase
from generator.errors import GenError, UsageError
from generator.schema import BOOTSTRAP_DISTROS

# Run inside the new root after packages are installed ("$1" is the root). Each line removes or
# fixes something that otherwise records the build host or the build time.
CUSTOMIZE_HOOKS = (
    'echo localhost > "$1/etc/hostname"',  # host's name is copied in otherwise
    ': > "$1/etc/resolv.conf"',  # host's resolvers; engines mount their own
    # ... and so are their modes: a host whose /etc/hostname is 0755 made another rootfs.
    'chmod 0644 "$1/etc/hostname" "$1/etc/resolv.conf"',
    'rm -f "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"',  # per-machine identity, if any
    'rm -rf "$1"/var/lib/apt/lists/*_* "$1"/var/cache/apt/*.bin',  # indexes: mirror state and times
    'rm -f "$1/var/cache/ldconfig/aux-cache" "$1/var/log/dpkg.log" "$1"/var/log/apt/*.log '
    '"$1/var/log/alternatives.log" "$1/var/log/bootstrap.log"',  # logs and caches carry times
    'rm -rf "$1"/tmp/* "$1"/var/tmp/*',
)
SNAPSHOT_APT_OPTION = 'Acquire::Check-Valid-Until "false"'  # old snapshots' Release files are expired


def mmdebstrap_argv(base: BootstrapBase, mirror_url: str, tarball: Path) -> list[str]:
    """The mmdebstrap command line for a manifest's bootstrap base."""
    argv = ["mmdebstrap", f"--variant={base.variant}", "--format=tar"]
    if base.platform is not None:  # a foreign architecture: its maintainer scripts run under qemu
        argv.append(f"--architectures={base.platform.debian_arch}")
    if base.components:  # none given: mmdebstrap's own default, main
        argv.append(f"--components={','.join(base.components)}")
    if base.include:
        argv.append(f"--include={','.join(base.include)}")
    if base.snapshot:
        argv.append(f"--aptopt={SNAPSHOT_APT_OPTION}")
        argv.append(f"--customize-hook=echo '{SNAPSHOT_APT_OPTION};' > \"$1/etc/apt/apt.conf.d/50gen-snapshot\"")
    argv += [f"--customize-hook={hook}" for hook in CUSTOMIZE_HOOKS]
    argv += [base.release, str(tarball), mirror_url]
    return argv


def import_platform_flags(base: BootstrapBase) -> list[str]:
    """podman import records the host's platform unless told the rootfs is another's."""
    if base.platform is None:
        return []
    flags = ["--os", "linux", "--arch", base.platform.architecture]
    return flags + (["--variant", base.platform.variant] if base.platform.variant else [])


def bootstrap_base(
    host: Host, image: OutputImage, cancel: Cancel, on_event: EventHandler, *, fresh: bool = False
) -> StoredImage:
    """The base image of a bootstrap manifest, bootstrapped and imported unless its tag exists
    (fresh: bootstrapped again all the same, for newer packages; the import moves the tag)."""
    base = image.base
    if not isinstance(base, BootstrapBase):
        raise GenError(f"{image.name}: its base is {base.kind!r}, not bootstrapped")
    ref = base.image
    found = None if fresh else inspect(host, ref)
    if found is not None:
        return found
    if base.distro not in BOOTSTRAP_DISTROS:
        raise UsageError(
            f"{image.directory}/gen-manifest.json: bootstrap of {base.distro!r} is not supported; "
            f"use {' or '.join(BOOTSTRAP_DISTROS)}, or an image/local base"
        )
    mirror = resolve_mirror(base.mirror, base.distro, base.release, host.env)
    url = snapshot_url(mirror, base.snapshot)
    epoch = base.source_date_epoch if base.source_date_epoch is not None else image.source_date_epoch
    name = ref.rsplit("/", 1)[-1].replace(":", "-")
    host.cache_dir.mkdir(parents=True, exist_ok=True)
    host.logs_dir.mkdir(parents=True, exist_ok=True)
    tarball = host.cache_dir / f"{name}.tar"
    partial = tarball.with_suffix(".tar.partial")
    log_path = host.logs_dir / f"{name}.log"
    started = time.monotonic()

    def emit(step: str, message: str = "") -> None:
        on_event(BuildEvent(image.name, Phase.BOOTSTRAP, step, time.monotonic() - started, message))

    env = dict(host.env, SOURCE_DATE_EPOCH=str(epoch))
    with log_path.open("w") as log:
        emit(f"mmdebstrap {base.release}", ref)
        code, tail = run_logged(
            mmdebstrap_argv(base, url, partial),
            env,
            log,
            cancel,
            on_line=lambda line: emit(line) if line.startswith("I: ") else None,
        )
        if code != 0:
            partial.unlink(missing_ok=True)
            raise ToolError(
                f"{image.name}: bootstrapping {ref} with mmdebstrap failed (exit {code}); "
                f"check the mirror ({_mirror_source(image, host)}) and run `gen doctor`",
                tail,
                log_path,
            )
        os.utime(partial, (epoch, epoch))
        partial.replace(tarball)
        emit("import", ref)
        code, tail = run_logged(
            ["podman", *host.podman_flags(), "import", *import_platform_flags(base), str(tarball), ref],
            host.env,
            log,
            cancel,
        )
    if code != 0:
        raise ToolError(
            f"{image.name}: importing {tarball} as {ref} failed (exit {code}); run `gen doctor`", tail, log_path
        )
    tarball.unlink(missing_ok=True)  # the image holds it now; 170 MB is not worth keeping twice
    imported = inspect(host, ref)
    if imported is None:
        raise GenError(f"{image.name}: {ref} missing right after import; run `gen doctor`")
    return imported


def _mirror_source(image: OutputImage, host: Host) -> str:
    return "spec base.bootstrap.mirror, GEN_MIRROR or the host's apt sources"
