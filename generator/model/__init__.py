"""The model stage: typed, frozen views of a resolved spec.

Field names follow the JSON Schema exactly; values come from the merged spec with schema defaults
already filled by the spec stage, so this module decides nothing about defaults itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generator.schema import FAMILY_BY_DISTRO
from generator.spec.merge import with_defaults_at

if TYPE_CHECKING:
    from generator.spec import ResolvedSpec


@dataclass(frozen=True)
class Bootstrap:
    variant: str
    components: tuple[str, ...]
    include: tuple[str, ...]
    mirror: str | None
    snapshot: str | None
    source_date_epoch: int


@dataclass(frozen=True)
class Base:
    distro: str
    release: str
    bootstrap: Bootstrap | None
    image: str | None  # registry reference pinned by digest
    local: str | None  # local storage reference or oci-archive:PATH

    @property
    def family(self) -> str:
        return FAMILY_BY_DISTRO[self.distro]


@dataclass(frozen=True)
class Init:
    kind: str  # "s6-overlay" | "s6" | "none"
    version: str | None
    checksums: tuple[tuple[str, str], ...]
    source: str | None
    restart: str
    kill_grace_time: int
    services_grace_time: int
    services_start_timeout: int
    on_hook_failure: str
    start_as_root: bool
    verbosity: int


@dataclass(frozen=True)
class Readiness:
    """When a program counts as ready: check polled every interval_ms, or None when the program
    writes a newline to fd itself; timeout_ms bounds what waits on it."""

    check: tuple[str, ...] | None
    fd: int
    interval_ms: int
    timeout_ms: int


@dataclass(frozen=True)
class Service:
    name: str
    command: tuple[str, ...]
    user: str | None
    log_stdout: bool
    ready: Readiness | None = None
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Logging:
    dir: str
    max_size: int
    keep: int
    timestamp: str
    stdout: bool
    logger: str  # gen-log | s6-log
    forward_to: str  # a syslog collector's udp://, tcp:// or unix:// address; "" for none
    forward_facility: str


@dataclass(frozen=True)
class Sysctls:
    values: tuple[tuple[str, str], ...]  # sorted by key; values as strings
    policy: str
    node_level: str


@dataclass(frozen=True)
class Group:
    name: str
    gid: int


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    group: str  # primary group name (implicit: same as the user)
    groups: tuple[str, ...]
    home: str
    shell: str


@dataclass(frozen=True)
class Volume:
    path: str
    owner: str
    group: str
    mode: str
    fix_ownership: bool
    recursive: bool


@dataclass(frozen=True)
class Overlay:
    src: Path  # absolute path of the directory on the host
    dest: str


@dataclass(frozen=True)
class Profile:
    """A run-time configuration chosen at start: its env, and its own overlays (kept in the
    image under profiles_dir/NAME/rootfs/, put over / at start)."""

    name: str
    env: tuple[tuple[str, str], ...]
    rootfs: tuple[Overlay, ...]


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval: str | None
    timeout: str | None
    start_period: str | None
    retries: int | None


@dataclass(frozen=True)
class Image:
    """One image, everything merged over its extends chain."""

    name: str
    tags: tuple[str, ...]
    description: str | None
    spec_path: Path
    parent: str | None
    base: Base
    packages: tuple[str, ...]
    init: Init
    services: tuple[Service, ...]
    logging: Logging
    sysctls: Sysctls
    groups: tuple[Group, ...]  # declared plus the implicit per-user groups, by gid
    users: tuple[User, ...]
    user: str | None
    volumes: tuple[Volume, ...]
    env: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    rootfs: tuple[Overlay, ...]
    profiles: tuple[Profile, ...]
    default_profile: str | None
    profiles_dir: str
    entrypoint: tuple[str, ...] | None
    cmd: tuple[str, ...] | None
    ready: Readiness | None
    after: tuple[str, ...]
    stopsignal: str | None
    healthcheck: Healthcheck | None
    expose: tuple[str, ...]
    workdir: str | None
    templates: Path | None
    platforms: tuple[str, ...] | None = None  # None: the build host's own platform

    @property
    def family(self) -> str:
        return self.base.family

    @property
    def runs_as(self) -> str:
        """The image's USER, which PID 1 starts as: `user`, unless the init layer must start as
        root to prepare (it then drops to `user` per service)."""
        if self.init.kind != "none" and self.init.start_as_root:
            return "root"
        return self.user or "root"

    def user_named(self, name: str) -> User | None:
        return next((u for u in self.users if u.name == name), None)

    def overlays(self) -> tuple[tuple[tuple[str | int, ...], Overlay], ...]:
        """Every overlay directory the image copies, with the spec path that names it: `rootfs`,
        then each profile's."""
        found: list[tuple[tuple[str | int, ...], Overlay]] = [(("rootfs", i), o) for i, o in enumerate(self.rootfs)]
        for profile in self.profiles:
            found += [(("profiles", profile.name, "rootfs", i), o) for i, o in enumerate(profile.rootfs)]
        return tuple(found)


def _tuple(items: Any) -> tuple:
    return tuple(items or ())


def _bootstrap(data: dict | None) -> Bootstrap | None:
    if data is None:
        return None
    return Bootstrap(
        variant=data["variant"],
        components=_tuple(data["components"]),
        include=_tuple(sorted(set(data["include"]))),
        mirror=data.get("mirror"),
        snapshot=data.get("snapshot"),
        source_date_epoch=data["source_date_epoch"],
    )


def users_from(data: list[dict]) -> tuple[User, ...]:
    return tuple(
        User(
            name=u["name"],
            uid=u["uid"],
            group=u.get("group", u["name"]),
            groups=_tuple(u["groups"]),
            home=u.get("home", f"/home/{u['name']}"),
            shell=u["shell"],
        )
        for u in data
    )


def groups_from(declared: list[dict], users: tuple[User, ...]) -> tuple[Group, ...]:
    """Declared groups plus one per user without an explicit primary group (gid = uid)."""
    groups = {g["name"]: Group(g["name"], g["gid"]) for g in declared}
    for u in users:
        if u.group not in groups:
            groups[u.group] = Group(u.group, u.uid)
    return tuple(sorted(groups.values(), key=lambda g: (g.gid, g.name)))


def volumes_from(data: list[dict], users: tuple[User, ...], app_user: str | None) -> tuple[Volume, ...]:
    primary = {u.name: u.group for u in users}
    result = []
    for v in data:
        owner = v.get("owner", app_user or "root")
        result.append(
            Volume(
                path=v["path"],
                owner=owner,
                group=v.get("group", primary.get(owner, "root")),
                mode=v["mode"] if len(v["mode"]) == 4 else "0" + v["mode"],
                fix_ownership=v["fix_ownership"],
                recursive=v["recursive"],
            )
        )
    return tuple(result)


def _overlays(data: list, spec_dir: Path) -> tuple[Overlay, ...]:
    """`rootfs` entries (the spec's own text: DIR or {src, dest}), in the object form with defaults."""
    items = (with_defaults_at(("rootfs", i), {"src": o} if isinstance(o, str) else o) for i, o in enumerate(data))
    return tuple(Overlay(src=(spec_dir / o["src"]).resolve(), dest=o["dest"]) for o in items)


def _profiles(data: dict, own: dict, spec_dir: Path, profiles_dir: str) -> tuple[Profile, ...]:
    """Every profile of the resolved spec; overlays only from the spec's own file (a parent's
    are in the parent image already, and its paths are relative to its own file)."""
    own_profiles = own.get("profiles") or {}
    return tuple(
        Profile(
            name,
            tuple(sorted(profile["env"].items())),
            tuple(
                Overlay((spec_dir / src).resolve(), f"{profiles_dir}/{name}/rootfs")
                for src in (own_profiles.get(name) or {}).get("rootfs", [])
            ),
        )
        for name, profile in sorted(data["profiles"].items())
    )


def _optional_tuple(value: list | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def duration_ms(text: str) -> int:
    """A schema duration (`30s`, `500ms`, `2m`, `1h`) in milliseconds."""
    number = text.rstrip("msh")
    return int(number) * _DURATION_MS[text[len(number) :]]


def readiness_from(ready: dict | None) -> Readiness | None:
    if ready is None:
        return None
    return Readiness(
        check=tuple(ready["check"]) if "check" in ready else None,
        fd=ready["fd"],
        interval_ms=duration_ms(ready["interval"]),
        timeout_ms=duration_ms(ready["timeout"]),
    )


def longest_timeout_ms(declared: Iterable[Readiness | None]) -> int | None:
    """The longest timeout of the readiness declared (CMD's and the services'); None when none is."""
    timeouts = [r.timeout_ms for r in declared if r is not None]
    return max(timeouts) if timeouts else None


def init_from(init: dict) -> Init:
    return Init(
        kind=init["kind"],
        version=init.get("version"),
        checksums=tuple(sorted((init.get("checksums") or {}).items())),
        source=init.get("source"),
        restart=init["restart"],
        kill_grace_time=init["kill_grace_time"],
        services_grace_time=init["services_grace_time"],
        services_start_timeout=init["services_start_timeout"],
        on_hook_failure=init["on_hook_failure"],
        start_as_root=init["start_as_root"],
        verbosity=init["verbosity"],
    )


def logging_from(logging: dict) -> Logging:
    # No `forward` is forwarding to no collector ("", as a child turns its parent's off).
    forward = logging.get("forward") or with_defaults_at(("logging", "forward"), {"to": ""})
    return Logging(
        **{k: logging[k] for k in ("dir", "max_size", "keep", "timestamp", "stdout", "logger")},
        forward_to=forward["to"],
        forward_facility=forward["facility"],
    )


def sysctls_from(sysctls: dict) -> Sysctls:
    return Sysctls(
        values=tuple(sorted((k, str(v)) for k, v in sysctls["values"].items())),
        policy=sysctls["policy"],
        node_level=sysctls["node_level"],
    )


def build_image(spec: ResolvedSpec) -> Image:
    """Turn one resolved spec into an Image.

    Overlays and the template directory are the spec's own (paths are relative to its own file,
    and a parent's overlays are already in the parent image); everything else is merged.
    """
    name, spec_path, parent, data = spec.name, spec.path, spec.parent, spec.data
    users = users_from(data["users"])
    base = data["base"]
    health = data.get("healthcheck")
    spec_dir = spec_path.parent
    return Image(
        name=name,
        tags=tuple(data["tags"]),
        description=data.get("description"),
        spec_path=spec_path,
        parent=parent,
        base=Base(
            distro=base["distro"],
            release=base["release"],
            bootstrap=_bootstrap(base.get("bootstrap")),
            image=base.get("image"),
            local=base.get("local"),
        ),
        packages=tuple(sorted(set(data["packages"]))),
        init=init_from(data["init"]),
        services=tuple(
            Service(
                s["name"],
                tuple(s["command"]),
                s.get("user"),
                s["log_stdout"],
                readiness_from(s.get("ready")),
                tuple(s["after"]),
            )
            for s in data["services"]
        ),
        logging=logging_from(data["logging"]),
        sysctls=sysctls_from(data["sysctls"]),
        groups=groups_from(data["groups"], users),
        users=users,
        user=data.get("user"),
        volumes=volumes_from(data["volumes"], users, data.get("user")),
        env=tuple(sorted(data["env"].items())),
        labels=tuple(sorted(data["labels"].items())),
        rootfs=_overlays(spec.own.get("rootfs", []), spec_dir),
        profiles=_profiles(data, spec.own, spec_dir, data["profiles_dir"]),
        default_profile=data.get("default_profile"),
        profiles_dir=data["profiles_dir"],
        entrypoint=_optional_tuple(data.get("entrypoint")),
        cmd=_optional_tuple(data.get("cmd")),
        ready=readiness_from(data.get("ready")),
        after=tuple(data["after"]),
        stopsignal=data.get("stopsignal"),
        healthcheck=None
        if health is None
        else Healthcheck(
            test=tuple(health["test"]),
            interval=health.get("interval"),
            timeout=health.get("timeout"),
            start_period=health.get("start_period"),
            retries=health.get("retries"),
        ),
        expose=tuple(sorted({str(p) if "/" in str(p) else f"{p}/tcp" for p in data["expose"]})),
        workdir=data.get("workdir"),
        templates=(spec_dir / spec.own["templates"]).resolve() if spec.own.get("templates") else None,
        platforms=_optional_tuple(data.get("platforms")),
    )
