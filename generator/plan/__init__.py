"""The plan stage: every decision about what goes into one image's Dockerfile, and in what order.

Templates only turn these steps into text. The order of the final stage is fixed here, least
changing first, so that an edit invalidates as few layers as possible:

    (USER root, when the parent runs as non-root) -> packages -> init layer files -> accounts
    -> directories -> generated config -> overlays -> env -> labels -> metadata (EXPOSE,
    VOLUME, WORKDIR, USER, STOPSIGNAL, HEALTHCHECK, ENTRYPOINT, CMD last)

A child image (one with `extends`) is built FROM its parent image, so its filesystem steps
carry only what the parent lacks; its configuration (env, labels, metadata) is stated whole,
which is idempotent and keeps each Dockerfile readable on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from generator.contract import ImageFormat
from generator.model import Group, Healthcheck, Image, User, Volume
from generator.naming import DEFAULT_PREFIX
from generator.plan.accounts import account_ids, base_may_be_non_root
from generator.plan.hints import HEALTH_SCRIPT, hint_labels, longest_readiness_ms
from generator.plan.init_layer import CompileStage, FetchStage, InitLayer, init_env, init_layer, layer_packages
from generator.plan.sysctl import sysctl_config
from generator.spec.merge import with_defaults_at

# The final stage's step kinds, in the order their steps come: the ordering rule, applied to every output.
StepKind = Literal[
    "build_user",
    "packages",
    "init_files",
    "accounts",
    "directories",
    "config_files",
    "overlay",
    "env",
    "labels",
    "embedded_spec",
    "metadata",
]
STEP_ORDER: tuple[StepKind, ...] = get_args(StepKind)
BaseKind = Literal["bootstrap", "image", "local", "parent"]

# Step kinds that render a RUN, which needs root (package managers, useradd, install -o).
RUN_STEPS: frozenset[StepKind] = frozenset({"packages", "accounts", "directories"})

OCI = "org.opencontainers.image"


@dataclass(frozen=True)
class BuildAsRoot:
    """The base may run as a non-root user; this image's RUN steps need root."""

    base_user: str | None  # the parent's user; None: a registry or local image, which may set any
    kind: Literal["build_user"] = "build_user"


@dataclass(frozen=True)
class InstallPackages:
    packages: tuple[str, ...]  # sorted, de-duplicated
    kind: Literal["packages"] = "packages"


@dataclass(frozen=True)
class CopyInitFiles:
    context_dir: str  # directory in the build context, copied to /
    from_stages: tuple[FetchStage | CompileStage, ...]  # builder stages whose output is copied to / first
    kind: Literal["init_files"] = "init_files"


@dataclass(frozen=True)
class CreateAccounts:
    groups: tuple[Group, ...]
    users: tuple[User, ...]
    kind: Literal["accounts"] = "accounts"


@dataclass(frozen=True)
class Directory:
    path: str
    owner: str
    group: str
    mode: str


@dataclass(frozen=True)
class CreateDirectories:
    directories: tuple[Directory, ...]
    kind: Literal["directories"] = "directories"


@dataclass(frozen=True)
class CopyConfigFiles:
    context_dir: str  # generated configuration, copied to /
    kind: Literal["config_files"] = "config_files"


@dataclass(frozen=True)
class CopyEmbeddedSpec:
    """The resolved spec, copied late: it changes whenever anything in the spec does."""

    context_dir: str
    kind: Literal["embedded_spec"] = "embedded_spec"


@dataclass(frozen=True)
class CopyOverlay:
    context_dir: str  # rootfs/NN-name
    dest: str
    kind: Literal["overlay"] = "overlay"


@dataclass(frozen=True)
class SetEnv:
    pairs: tuple[tuple[str, str], ...]
    kind: Literal["env"] = "env"


@dataclass(frozen=True)
class SetLabels:
    pairs: tuple[tuple[str, str], ...]
    kind: Literal["labels"] = "labels"


@dataclass(frozen=True)
class Metadata:
    expose: tuple[str, ...]
    volumes: tuple[str, ...]
    workdir: str | None
    user: str | None  # uid
    user_name: str
    stopsignal: str | None
    healthcheck: Healthcheck | None
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    kind: Literal["metadata"] = "metadata"


Step = (
    BuildAsRoot
    | InstallPackages
    | CopyInitFiles
    | CreateAccounts
    | CreateDirectories
    | CopyConfigFiles
    | CopyOverlay
    | SetEnv
    | SetLabels
    | CopyEmbeddedSpec
    | Metadata
)


@dataclass(frozen=True)
class OverlaySource:
    """An overlay directory on the host and where render puts it in the context."""

    host_dir: str
    context_dir: str


@dataclass(frozen=True)
class ConfigFile:
    """A file generated from the spec, copied into the image from gen-config/: its text, or the
    bundled template render turns into it (script text lives in templates/)."""

    path: str  # relative to / in the image
    text: str = ""
    mode: int = 0o644
    template: str = ""  # below templates/; rendered with spec_path


# Where every image carries the spec that made it; `gen-spec` prints it (its script: a bundled
# template, below templates/).
SPEC_PATH = "etc/gen/spec.json"
SPEC_PRINTER = "usr/local/bin/gen-spec"
SPEC_PRINTER_TEMPLATE = "config/gen-spec.j2"


@dataclass(frozen=True)
class Plan:
    image: Image
    spec_file: str  # relative to the project root, for the header
    base_image: str  # default of ARG BASE_IMAGE
    base_kind: BaseKind
    base_name: str  # org.opencontainers.image.base.name
    source_date_epoch: int
    family: str
    builder_stages: tuple[FetchStage | CompileStage, ...]
    steps: tuple[Step, ...]
    overlays: tuple[OverlaySource, ...]
    init: InitLayer | None
    init_env: tuple[tuple[str, str], ...]  # the init layer's defaults, for its templates
    resolved_spec_json: str  # embedded at SPEC_PATH
    config_files: tuple[ConfigFile, ...] = field(default=())

    @property
    def tags(self) -> tuple[str, ...]:
        return self.image.tags

    @property
    def image_format(self) -> ImageFormat:
        """docker when the image has a HEALTHCHECK: the OCI image config has no field for it, so
        buildah drops it from an OCI image (and a child built as OCI would drop its parent's)."""
        return "docker" if self.metadata.healthcheck is not None else "oci"

    @property
    def metadata(self) -> Metadata:
        """The image's run-time metadata: the one Metadata step, which the plan puts last."""
        found = [s for s in self.steps if isinstance(s, Metadata)]
        if len(found) != 1:
            raise AssertionError(f"a plan holds exactly one Metadata step, this one {len(found)}")
        return found[0]


def image_ref(name: str, tag: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/{name}:{tag}"


def bootstrap_image_ref(image: Image, key: str) -> str:
    return f"{DEFAULT_PREFIX}/rootfs-{image.base.distro}-{image.base.release}:{key}"


def _base(image: Image, parent: Image | None, bootstrap_key: str) -> tuple[str, BaseKind, str]:
    """(default BASE_IMAGE reference, kind, OCI base name)."""
    if parent is not None:
        ref = image_ref(parent.name, parent.tags[0])
        return ref, "parent", ref
    base = image.base
    if base.image:
        return base.image, "image", base.image.split("@", 1)[0]
    if base.local:
        return base.local, "local", base.local
    ref = bootstrap_image_ref(image, bootstrap_key)
    return ref, "bootstrap", ref


def _new_packages(image: Image, parent: Image | None, layer: InitLayer | None) -> tuple[str, ...]:
    wanted = set(image.packages) | set(layer.packages if layer else ())
    if parent is None and image.base.bootstrap is not None:  # already in the bootstrapped rootfs
        wanted -= {p.split("=", 1)[0] for p in image.base.bootstrap.include} | set(image.base.bootstrap.include)
    if parent is not None:
        wanted -= set(parent.packages)
        wanted -= set(layer_packages(parent))
    return tuple(sorted(wanted))


def _new_accounts(image: Image, parent: Image | None) -> CreateAccounts | None:
    old_groups = set(parent.groups) if parent else set()
    old_users = set(parent.users) if parent else set()
    groups = tuple(g for g in image.groups if g not in old_groups)
    users = tuple(u for u in image.users if u not in old_users)
    return CreateAccounts(groups, users) if groups or users else None


def _directories(image: Image, parent: Image | None) -> tuple[Directory, ...]:
    """Volumes and homes come with owner and mode; the log directory is group-0 writable
    so that an arbitrary uid in group 0 (OpenShift) can log."""
    wanted: dict[str, Directory] = {}
    owner = image.runs_as  # PID 1 writes both; group 0 for an arbitrary uid
    if image.init.kind != "none":
        wanted[image.logging.dir] = Directory(image.logging.dir, owner, "root", "2775")
    if image.init.kind == "s6":
        # The init's run directory, group-0 writable too (podman copies it into a tmpfs /run).
        wanted["/run/gen"] = Directory("/run/gen", owner, "root", "2775")
    for v in image.volumes:
        wanted[v.path] = Directory(v.path, v.owner, v.group, v.mode)
    if parent is not None:
        for d in _directories(parent, None):
            if wanted.get(d.path) == d:
                del wanted[d.path]
    return tuple(sorted(wanted.values(), key=lambda d: d.path))


def _labels(image: Image, base_name: str, spec_sha256: str) -> tuple[tuple[str, str], ...]:
    # org.opencontainers.image.base.digest is known at build time only: the build stage adds it.
    labels: dict[str, str] = {
        f"{OCI}.title": image.name,
        f"{OCI}.version": image.tags[0],
        f"{OCI}.base.name": base_name,
        "dev.gen.spec.sha256": spec_sha256,
        "dev.gen.init": image.init.kind,
    }
    if image.description:
        labels[f"{OCI}.description"] = image.description
    labels.update(hint_labels(image))
    labels.update(dict(image.labels))
    return tuple(sorted(labels.items()))


def _env(image: Image, defaults: dict[str, str]) -> tuple[tuple[str, str], ...]:
    env = dict(defaults)
    env.update(dict(image.env))  # the spec's own values win over the init layer's defaults
    return tuple(sorted(env.items()))


def _final_user(image: Image, parent: Image | None) -> str | None:
    """USER last, as a uid (Kubernetes' runAsNonRoot cannot check a name): stated whenever it is
    not root or the base's may not be, so the spec's user holds whatever the base set."""
    if image.runs_as != "root" or base_may_be_non_root(image, parent):
        return str(account_ids(image)[0][image.runs_as])
    return None


def _metadata(image: Image, parent: Image | None, layer_entrypoint: tuple[str, ...] | None) -> Metadata:
    entrypoint = image.entrypoint
    if layer_entrypoint is not None:
        entrypoint = layer_entrypoint + (image.entrypoint or ())
    return Metadata(
        expose=image.expose,
        volumes=tuple(v.path for v in image.volumes),
        workdir=image.workdir,
        user=_final_user(image, parent),
        user_name=image.runs_as,
        # With an init layer, PID 1 receives SIGTERM and gives the app its own stop signal.
        stopsignal=image.stopsignal if image.init.kind == "none" else None,
        healthcheck=image.healthcheck or _readiness_healthcheck(image),
        entrypoint=entrypoint,
        cmd=image.cmd,
    )


def _readiness_healthcheck(image: Image) -> Healthcheck | None:
    """With readiness declared (on CMD or a service) and no healthcheck of the spec's own, one
    that asks the supervision tree: every service up, the declared ones ready, CMD not in a
    restart pause. Its start period is the longest readiness timeout, so a slow start is not
    counted as a failure."""
    longest = longest_readiness_ms(image)
    if image.init.kind == "none" or longest is None:
        return None
    start_period = f"{longest // 1000}s" if longest % 1000 == 0 else f"{longest}ms"
    return Healthcheck(test=(HEALTH_SCRIPT,), interval="10s", timeout="5s", start_period=start_period, retries=3)


def _volume_config(volumes: tuple[Volume, ...]) -> str:
    lines = [f"{v.path} {v.owner} {v.group} {v.mode} {int(v.fix_ownership)} {int(v.recursive)}" for v in volumes]
    return "".join(line + "\n" for line in lines)


def _config_files(image: Image) -> tuple[ConfigFile, ...]:
    """The spec printer, and the files the init layer's start-up hooks read (one line
    per item, fields space-separated: every field is validated to hold no spaces)."""
    files = [ConfigFile(SPEC_PRINTER, mode=0o755, template=SPEC_PRINTER_TEMPLATE)]
    if image.init.kind != "none" and image.sysctls.values:
        files.append(ConfigFile("etc/gen/sysctl.conf", sysctl_config(image)))
    if image.init.kind != "none" and image.volumes:
        files.append(ConfigFile("etc/gen/volumes", _volume_config(image.volumes)))
    for profile in image.profiles:  # each profile's env, even empty: its directory makes it known
        env = "".join(f"{key}={value}\n" for key, value in profile.env)
        files.append(ConfigFile(f"{image.profiles_dir.lstrip('/')}/{profile.name}/env", env))
    return tuple(files)


def make_plan(
    image: Image,
    parent: Image | None,
    *,
    spec_file: str,
    resolved_spec_json: str,
    bootstrap_key: str,
    s6_overlay_sums: Mapping[str, Mapping[str, str]] | None = None,
) -> Plan:
    """Decide the stages and ordered steps of one image. s6_overlay_sums: the release checksums
    gen knows for this project (default: the shipped table)."""
    base_image, base_kind, base_name = _base(image, parent, bootstrap_key)
    layer = init_layer(image, parent, s6_overlay_sums) if image.init.kind != "none" else None
    steps: list[Step] = []
    packages = _new_packages(image, parent, layer)
    if packages:
        steps.append(InstallPackages(packages))
    if layer is not None:
        steps.append(CopyInitFiles("gen-init", layer.builder_stages))
    accounts = _new_accounts(image, parent)
    if accounts:
        steps.append(accounts)
    directories = _directories(image, parent)
    if directories:
        steps.append(CreateDirectories(directories))
    config_files = _config_files(image)
    steps.append(CopyConfigFiles("gen-config"))
    all_overlays = [overlay for _, overlay in image.overlays()]
    overlays = tuple(OverlaySource(str(o.src), f"rootfs/{i:02d}-{o.src.name}") for i, o in enumerate(all_overlays, 1))
    steps.extend(CopyOverlay(o.context_dir, d.dest) for o, d in zip(overlays, all_overlays, strict=True))
    layer_env = init_env(image) if layer is not None else {}
    env = _env(image, layer_env)
    if env:
        steps.append(SetEnv(env))
    spec_sha256 = hashlib.sha256(resolved_spec_json.encode()).hexdigest()
    steps.append(SetLabels(_labels(image, base_name, spec_sha256)))
    steps.append(CopyEmbeddedSpec("gen-spec"))
    steps.append(_metadata(image, parent, layer.entrypoint if layer else None))
    if base_may_be_non_root(image, parent) and any(s.kind in RUN_STEPS for s in steps):
        steps.append(BuildAsRoot(parent.runs_as if parent is not None else None))
    ordered = tuple(sorted(steps, key=lambda s: STEP_ORDER.index(s.kind)))  # stable: overlays keep spec order
    source_date_epoch = _source_date_epoch(image)
    return Plan(
        image=image,
        spec_file=spec_file,
        base_image=base_image,
        base_kind=base_kind,
        base_name=base_name,
        source_date_epoch=source_date_epoch,
        family=image.family,
        builder_stages=layer.builder_stages if layer else (),
        steps=ordered,
        overlays=overlays,
        init=layer,
        init_env=tuple(sorted(layer_env.items())),
        resolved_spec_json=resolved_spec_json,
        config_files=config_files,
    )


def _source_date_epoch(image: Image) -> int:
    """The bootstrap's timestamp, inherited down the chain; a registry or local base uses the
    schema default so every image still has a fixed one."""
    if image.base.bootstrap is not None:
        return image.base.bootstrap.source_date_epoch
    return with_defaults_at(("base", "bootstrap"), {})["source_date_epoch"]
