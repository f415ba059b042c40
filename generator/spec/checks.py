"""Rules the schema cannot state: between fields, between a spec and its parents, against the base.

Each check takes one resolved spec and returns diagnostics; `check_spec` runs them all.
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from importlib import resources
from typing import Any

from generator.errors import Diagnostic
from generator.schema import BOOTSTRAP_DISTROS, FAMILY_BY_DISTRO, platform_suffix
from generator.spec.resolved import ResolvedSpec
from generator.spec.yamlfile import JsonPath

BASE_SOURCES = ("bootstrap", "image", "local")
# Mount points that belong to the runtime; a VOLUME there hides what the kernel or engine puts in.
RUNTIME_PATHS = ("/proc", "/sys", "/dev", "/run")
# The distro's own directories: a volume on one hides what packages put there (and `recursive`
# would hand it all to the volume's owner); logs below the program trees mix with installed files.
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/sbin",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/libexec",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/lib",
)
PROGRAM_TREES = (
    "/bin",
    "/boot",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/sbin",
    "/usr/bin",
    "/usr/lib",
    "/usr/libexec",
    "/usr/sbin",
)
# The service CMD runs as, in every image.
CMD_SERVICE = "app"
# Names a service of an image with an init layer cannot take: CMD's, and s6-log's files in the log
# dir (each service logs to $GEN_LOG_DIR/<name>/).
RESERVED_SERVICE_NAMES = frozenset({CMD_SERVICE, "current", "state", "lock", "processed", "previous"})
# ... and in s6-overlay images, the s6-rc services s6-overlay's and gen's own (the plan's
# GEN_ONESHOTS); each spec service also owns NAME-log and NAME-pipeline in s6-rc's one namespace.
OVERLAY_RESERVED_NAMES = frozenset(
    {
        "base",
        "user",
        "user2",
        "top",
        "fix-attrs",
        "legacy-cont-init",
        "legacy-services",
        "s6rc-oneshot-runner",
        "s6rc-fdholder",
        "gen-setup",
        "gen-app",
    }
)
OVERLAY_SERVICE_SUFFIXES = ("log", "pipeline")


@cache
def base_accounts(family: str) -> tuple[dict[str, int], dict[str, int]]:
    """(users, groups) every root filesystem of the family has with fixed ids; empty when unknown."""
    try:
        text = resources.files("generator").joinpath(f"data/base-accounts-{family}.json").read_text("utf-8")
    except FileNotFoundError:
        return {}, {}
    data = json.loads(text)
    return data["users"], data["groups"]


def _check_base(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    own_base = spec.own.get("base")
    if spec.parent is not None:
        if own_base is not None:
            yield spec.diagnostic(
                ("base",),
                "a spec with `extends` inherits its parent's base and may not set one",
                f"remove `base`, or remove `extends: {spec.parent}` to start a new chain",
                key=True,
            )
        return
    if own_base is None:
        yield spec.diagnostic(
            (),
            "missing `base`: a spec without `extends` must say what it starts from",
            "add `base: {distro: debian, release: bookworm, bootstrap: {}}`, or `extends: PARENT`",
        )
        return
    sources = [s for s in BASE_SOURCES if s in own_base]
    if len(sources) != 1:
        found = ", ".join(sources) or "none"
        yield spec.diagnostic(
            ("base",),
            f"base needs exactly one of bootstrap, image, local (found: {found})",
            "bootstrap builds a rootfs locally with mmdebstrap; image is a registry image "
            "pinned by digest; local is an image already in storage or an OCI archive",
        )
    if "bootstrap" in own_base and own_base["distro"] not in BOOTSTRAP_DISTROS:
        yield spec.diagnostic(
            ("base", "bootstrap"),
            f"bootstrap (mmdebstrap) only makes {' and '.join(BOOTSTRAP_DISTROS)} root filesystems, "
            f"not {own_base['distro']}",
            "use base.image (pinned by digest) or base.local for this distro",
            key=True,
        )


def _check_init(spec: ResolvedSpec, parent_init_kind: str | None) -> Iterator[Diagnostic]:
    init = spec.data["init"]
    overlay_only = [k for k in ("version", "checksums", "source") if k in init]
    if init["kind"] == "s6-overlay" and "version" not in init:
        yield spec.diagnostic(
            ("init", "kind"),
            "init.kind s6-overlay needs a pinned init.version",
            "add e.g. `version: 3.2.0.2` under init",
        )
    elif init["kind"] != "s6-overlay" and overlay_only:
        yield spec.diagnostic(
            ("init", overlay_only[0]),
            f"init.{overlay_only[0]} only applies to kind s6-overlay (this spec's init is {init['kind']})",
            f"remove init.{overlay_only[0]}",
            key=True,
        )
    own_kind = spec.own.get("init", {}).get("kind")
    if spec.parent is not None and own_kind is not None and own_kind != parent_init_kind:
        if parent_init_kind != "none":
            yield spec.diagnostic(
                ("init", "kind"),
                f"a child cannot replace or remove the {parent_init_kind} "
                f"init layer its parent {spec.parent!r} installs",
                "leave init.kind unset, or extend a parent without an init layer",
            )


def _check_platforms(spec: ResolvedSpec, parent: ResolvedSpec | None) -> Iterator[Diagnostic]:
    own = spec.own.get("platforms")
    if parent is None or own is None:
        return
    inherited = parent.data.get("platforms")
    if inherited is None:
        yield spec.diagnostic(
            ("platforms",),
            f"parent {parent.name!r} builds only for the build host's platform, so a child cannot choose others",
            f"set platforms on {parent.name!r} first (a child may then narrow that list)",
            key=True,
        )
        return
    for index, platform in enumerate(own):
        if platform not in inherited:
            yield spec.diagnostic(
                ("platforms", index),
                f"{platform} is not built for parent {parent.name!r} "
                f"({', '.join(inherited)}): a child may narrow its parent's platforms, never "
                "widen them",
                f"add {platform} to {parent.name!r}'s platforms, or remove it here",
            )


def _duplicates(items: list[dict], key: str) -> Iterator[tuple[int, object]]:
    seen: dict[object, int] = {}
    for index, item in enumerate(items):
        value = item[key]
        if value in seen:
            yield index, value
        seen.setdefault(value, index)


def _check_accounts(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    users, groups = spec.data["users"], spec.data["groups"]
    family = FAMILY_BY_DISTRO[spec.data["base"]["distro"]]
    base_users, base_groups = base_accounts(family)
    for index, uid in _duplicates(users, "uid"):
        yield spec.diagnostic(
            ("users", index, "uid"), f"uid {uid} is given to two users", "give every user its own fixed uid"
        )
    for index, gid in _duplicates(groups, "gid"):
        yield spec.diagnostic(
            ("groups", index, "gid"), f"gid {gid} is given to two groups", "give every group its own fixed gid"
        )
    yield from _check_base_clashes(spec, "users", "uid", base_users)
    yield from _check_base_clashes(spec, "groups", "gid", base_groups)
    yield from _check_implicit_groups(spec, base_groups)
    group_ids = {g["name"]: g["gid"] for g in groups}
    known_groups = set(group_ids) | set(base_groups) | {u["name"] for u in users if "group" not in u}
    for index, user in enumerate(users):
        if "group" not in user:
            clash = next((g for g, gid in group_ids.items() if gid == user["uid"] and g != user["name"]), None)
            if clash:
                yield spec.diagnostic(
                    ("users", index, "uid"),
                    f"user {user['name']!r} gets its own group with "
                    f"gid {user['uid']}, which group {clash!r} already has",
                    f"set `group: {clash}` on the user, or pick another uid",
                )
        for field, names in (("group", [user.get("group")]), ("groups", user["groups"])):
            for name in names:
                if name is not None and name not in known_groups:
                    yield spec.diagnostic(
                        ("users", index, field),
                        f"user {user['name']!r} names group {name!r}, which is not declared",
                        f"add `{{name: {name}, gid: N}}` to groups",
                    )


def _check_base_clashes(spec: ResolvedSpec, field: str, id_key: str, base: dict[str, int]) -> Iterator[Diagnostic]:
    """useradd/groupadd refuse a name or an id the base already has (root and uid 0 included)."""
    owner_of = {number: name for name, number in base.items()}
    for index, entry in enumerate(spec.data[field]):
        if entry["name"] in base:
            yield spec.diagnostic(
                (field, index, "name"),
                f"{entry['name']!r} already exists in the base (with "
                f"{id_key} {base[entry['name']]}): it cannot be created again",
                "leave it out (it is there), or use another name",
                key=True,
            )
        elif entry[id_key] in owner_of:
            yield spec.diagnostic(
                (field, index, id_key),
                f"{id_key} {entry[id_key]} belongs to the base's {owner_of[entry[id_key]]!r}",
                f"pick an unused {id_key} (1000 and up are free)",
            )


def _check_implicit_groups(spec: ResolvedSpec, base_groups: dict[str, int]) -> Iterator[Diagnostic]:
    """A user without `group` gets a group of its own name with gid = uid: the base must not have either."""
    owner_of = {gid: name for name, gid in base_groups.items()}
    for index, user in enumerate(spec.data["users"]):
        if "group" in user or user["name"] in base_groups:
            continue
        if user["uid"] in owner_of:
            yield spec.diagnostic(
                ("users", index, "uid"),
                f"user {user['name']!r} gets its own group with gid "
                f"{user['uid']}, which the base's group {owner_of[user['uid']]!r} has",
                "pick another uid, or set `group:` to a declared group",
            )


def _check_parent_accounts(spec: ResolvedSpec, parent: ResolvedSpec | None) -> Iterator[Diagnostic]:
    """The parent image already created its users and groups: a child may repeat one, not change it."""
    if parent is None:
        return
    for field in ("users", "groups"):
        created = {entry["name"]: entry for entry in parent.data[field]}
        for index, entry in enumerate(spec.data[field]):
            before = created.get(entry["name"])
            if before is not None and before != entry:
                yield spec.diagnostic(
                    (field, index, "name"),
                    f"{entry['name']!r} is created by parent "
                    f"{parent.name!r} as {_account_text(before)}; a child cannot change it",
                    "leave it out here (it is inherited), or use another name",
                    key=True,
                )


def _account_text(entry: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(entry.items()) if k != "name" and v not in ([], None))


def _known_users(spec: ResolvedSpec) -> set[str]:
    family = FAMILY_BY_DISTRO[spec.data["base"]["distro"]]
    return {u["name"] for u in spec.data["users"]} | set(base_accounts(family)[0]) | {"root"}


def _known_groups(spec: ResolvedSpec) -> set[str]:
    family = FAMILY_BY_DISTRO[spec.data["base"]["distro"]]
    implicit = {u.get("group", u["name"]) for u in spec.data["users"]}
    return {g["name"] for g in spec.data["groups"]} | implicit | set(base_accounts(family)[1]) | {"root"}


def _check_account_references(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    users, groups = _known_users(spec), _known_groups(spec)
    references: list[tuple[tuple[str | int, ...], Any]] = [(("user",), spec.data.get("user"))]
    references += [(("services", i, "user"), s.get("user")) for i, s in enumerate(spec.data["services"])]
    references += [(("volumes", i, "owner"), v.get("owner")) for i, v in enumerate(spec.data["volumes"])]
    for path, name in references:
        if name is not None and name not in users:
            yield spec.diagnostic(
                path,
                f"user {name!r} is not declared",
                "add it to users (with a fixed uid), "
                f"or use one of: {', '.join(sorted(users - {'root'}))[:200] or 'root'}",
            )
    for index, volume in enumerate(spec.data["volumes"]):
        if "group" in volume and volume["group"] not in groups:
            yield spec.diagnostic(
                ("volumes", index, "group"),
                f"group {volume['group']!r} is not declared",
                "add it to groups (with a fixed gid)",
            )


def _check_service_users(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    """A non-root PID 1 cannot switch users: every service then runs as the image's `user`."""
    init, user = spec.data["init"], spec.data.get("user")
    if init["kind"] == "none" or init["start_as_root"] or user in (None, "root"):
        return
    for index, service in enumerate(spec.data["services"]):
        if service.get("user") not in (None, user):
            yield spec.diagnostic(
                ("services", index, "user"),
                f"service {service['name']!r} runs as {service['user']!r}, but PID 1 runs as "
                f"{user!r} (the image's user) and cannot switch users",
                f"run it as {user!r}, or set init.start_as_root: true (PID 1 then starts as "
                "root and drops to each service's user)",
            )


def _check_unique_entries(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    for field, key in (("users", "name"), ("groups", "name"), ("services", "name"), ("volumes", "path")):
        own = spec.own.get(field, [])
        for index, value in _duplicates(own, key):
            yield spec.file.diagnostic(
                (field, index, key),
                f"{field} lists {value!r} twice",
                f"list each {key} once (a child replaces a parent's entry with the same {key})",
            )


def reserved_service_names(init_kind: str, services: Iterable[str]) -> frozenset[str]:
    """The names no service of an image with this init (and these services) may take."""
    if init_kind == "none":
        return frozenset({CMD_SERVICE})
    if init_kind != "s6-overlay":
        return RESERVED_SERVICE_NAMES
    owned = {f"{name}-{suffix}" for name in services for suffix in OVERLAY_SERVICE_SUFFIXES}
    return RESERVED_SERVICE_NAMES | OVERLAY_RESERVED_NAMES | owned


def _check_service_names(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    services = [s["name"] for s in spec.data["services"]]
    reserved = reserved_service_names(spec.data["init"]["kind"], services)
    for index, name in enumerate(services):
        if name == CMD_SERVICE:
            yield spec.diagnostic(
                ("services", index, "name"), f"service name {name!r} is reserved for CMD", "choose another name"
            )
        elif name in reserved:
            yield spec.diagnostic(
                ("services", index, "name"),
                f"the name {name!r} is reserved by the init layer ({', '.join(sorted(reserved))})",
                "rename the service",
            )


def _check_start_order(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    """`after` names services of this spec, none itself, in no cycle; readiness needs an init."""
    services = spec.data["services"]
    names = [s["name"] for s in services]
    waits: list[tuple[JsonPath, str, str]] = [(("after", j), "CMD", n) for j, n in enumerate(spec.data["after"])]
    for i, service in enumerate(services):
        waits += [
            (("services", i, "after", j), f"service {service['name']!r}", n) for j, n in enumerate(service["after"])
        ]
    kind = spec.data["init"]["kind"]
    declared: list[JsonPath] = [("ready",)] if "ready" in spec.data else []
    declared += [("services", i, "ready") for i, s in enumerate(services) if "ready" in s]
    if kind == "none" and (waits or declared):
        path = waits[0][0] if waits else declared[0]
        yield spec.diagnostic(
            path, "`ready` and `after` need an init layer; this image has init.kind none", "set init.kind: s6"
        )
        return
    for path, who, name in waits:
        if name not in names:
            yield spec.diagnostic(
                path, f"{who} starts after {name!r}, which is not a service of this spec", _known("services", names)
            )
        elif who == f"service {name!r}":
            yield spec.diagnostic(path, f"{who} cannot start after itself", "remove it from its own `after`")
    sorter = graphlib.TopologicalSorter({s["name"]: [n for n in s["after"] if n != s["name"]] for s in services})
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        cycle = error.args[1]  # each name waits for the one before it; first == last
        first = next(i for i, s in enumerate(services) if s["name"] == cycle[-1] and cycle[-2] in s["after"])
        yield spec.diagnostic(
            ("services", first, "after", services[first]["after"].index(cycle[-2])),
            f"services start after each other in a cycle: {' -> '.join(reversed(cycle))}",
            "remove one of these `after` entries",
        )


def _check_profiles(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    """Profiles are chosen by the init at start; the default must be one of the declared ones."""
    profiles, default = spec.data["profiles"], spec.data.get("default_profile")
    if spec.data["init"]["kind"] == "none" and (profiles or default):
        path = ("profiles", next(iter(profiles))) if profiles else ("default_profile",)
        yield spec.diagnostic(path, "profiles need an init layer; this image has init.kind none", "set init.kind: s6")
    elif default and profiles and default not in profiles:
        yield spec.diagnostic(
            ("default_profile",),
            f"default_profile {default!r} is not one of the spec's profiles",
            _known("profiles", sorted(profiles)) + " (or leave it unset and pass GEN_PROFILE at start)",
        )


def _check_forwarding(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    """Log forwarding is gen-log's (a thread reading its files), run by the init's loggers."""
    logging = spec.data["logging"]
    if not logging.get("forward", {}).get("to"):
        return
    if spec.data["init"]["kind"] == "none":
        yield spec.diagnostic(
            ("logging", "forward"),
            "log forwarding needs an init layer; this image has init.kind none",
            "set init.kind: s6",
        )
    elif logging["logger"] != "gen-log":
        yield spec.diagnostic(
            ("logging", "forward"),
            f"log forwarding needs the gen-log logger; this image's is {logging['logger']}",
            "set logging.logger: gen-log, or leave logging.forward out",
        )


def _known(what: str, names: list[str]) -> str:
    return f"known {what}: {', '.join(names)}" if names else f"this spec declares no {what}"


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def _check_paths(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    for index, volume in enumerate(spec.data["volumes"]):
        path = volume["path"].rstrip("/") or "/"
        if path == "/" or _under(path, RUNTIME_PATHS):
            yield spec.diagnostic(
                ("volumes", index, "path"),
                f"{volume['path']} cannot be a volume: the runtime owns it",
                "mount data under its own directory, e.g. /data",
            )
        elif path in SYSTEM_DIRS:
            yield spec.diagnostic(
                ("volumes", index, "path"),
                f"{volume['path']} cannot be a volume: it is the "
                "distro's own directory, which a mount would hide (and re-owning would hand to "
                "the volume's owner)",
                "mount data under its own directory, e.g. /data or /etc/APP",
            )
    log_dir = spec.data["logging"]["dir"].rstrip("/") or "/"
    if log_dir == "/" or _under(log_dir, ("/proc", "/sys", "/dev")):
        yield spec.diagnostic(("logging", "dir"), f"{log_dir} cannot hold logs", "use e.g. /var/log/app")
    elif log_dir in SYSTEM_DIRS or _under(log_dir, PROGRAM_TREES):
        yield spec.diagnostic(
            ("logging", "dir"),
            f"{log_dir} is the distro's own directory: rotated logs there would mix with installed files",
            "use a directory of its own, e.g. /var/log/app",
        )


def _check_platform_tags(spec: ResolvedSpec) -> Iterator[Diagnostic]:
    """Each non-primary platform's image is tagged TAG-SUFFIX (linux/arm64: 1.0-arm64); a plain tag
    of that form would name two images."""
    tags = spec.data["tags"]
    for platform in spec.data.get("platforms") or ():
        suffix = f"-{platform_suffix(platform)}"
        for index, tag in enumerate(tags):
            if tag.endswith(suffix) and tag[: -len(suffix)] in tags:
                yield spec.diagnostic(
                    ("tags", index),
                    f"tag {tag!r} is also the name of {platform}'s image of tag {tag[: -len(suffix)]!r}",
                    f"drop {tag!r}: gen tags {platform}'s image with it already",
                )


CHECKS: tuple[Callable[[ResolvedSpec], Iterator[Diagnostic]], ...] = (
    _check_base,
    _check_accounts,
    _check_account_references,
    _check_service_users,
    _check_unique_entries,
    _check_service_names,
    _check_start_order,
    _check_profiles,
    _check_forwarding,
    _check_paths,
    _check_platform_tags,
)


def check_spec(spec: ResolvedSpec, parent: ResolvedSpec | None) -> list[Diagnostic]:
    """Every rule above, for one spec whose parent (if any) is already resolved."""
    parent_kind = parent.data["init"]["kind"] if parent is not None else None
    if "base" not in spec.data:  # nothing else can be judged without knowing the distro
        return list(_check_base(spec))
    return [*_check_init(spec, parent_kind), *_check_platforms(spec, parent), *_check_parent_accounts(spec, parent)] + [
        d for check in CHECKS for d in check(spec)
    ]
