"""What an image should do, read from the resolved spec gen embeds in it (/etc/gen/spec.json).

Reading it from the image, not from specs/, means `gen verify IMAGE` works for any gen image,
even one built elsewhere. An image without the file gets the schema defaults, so every check
still runs and the table says what the image lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from generator.plan import SPEC_PATH
from generator.plan.hints import RuntimeHints
from generator.plan.sysctl import SysctlClass, classify
from generator.schema import spec_schema

EMBEDDED_SPEC = "/" + SPEC_PATH


@dataclass(frozen=True)
class VolumeExpectation:
    path: str
    owner: str
    uid: int | None  # None: not a spec account; resolved inside the container
    fix_ownership: bool


@dataclass(frozen=True)
class Expectations:
    found_spec: bool  # False: no embedded spec, schema defaults stand in
    name: str | None
    init: str  # s6 | s6-overlay | none
    restart: str  # stop | restart: what CMD's exit does
    log_dir: str
    log_stdout: bool
    user: str  # the app's user name ("root" when the spec names none)
    uid: int | None  # None: not a spec account; resolved inside the container
    gid: int | None
    volumes: tuple[VolumeExpectation, ...]
    sysctls: tuple[tuple[str, str], ...]
    sysctl_policy: str

    def settable_sysctls(self) -> tuple[tuple[str, str], ...]:
        """The sysctls a runtime can set with --sysctl (node-level keys cannot be)."""
        return tuple((k, v) for k, v in self.sysctls if classify(k) is not SysctlClass.NODE)

    def sysctl_run_flags(self, image_ref: str) -> list[str]:
        """The `--sysctl` flags `gen hints` prints for this image."""
        hints = RuntimeHints(image_ref, tuple((k, v, classify(k)) for k, v in self.settable_sysctls()), (), ())
        return hints.run_flags()


def _defaults(section: str) -> dict[str, Any]:
    props = spec_schema()["properties"][section]["properties"]
    return {key: prop["default"] for key, prop in props.items() if "default" in prop}


def _section(spec: dict, section: str) -> dict[str, Any]:
    value = spec.get(section)
    merged = _defaults(section)
    if isinstance(value, dict):
        merged.update(value)
    return merged


def _accounts(spec: dict) -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
    """user name -> (uid, primary group name); group name -> gid (implicit groups: gid = uid)."""
    users: dict[str, tuple[int, str]] = {"root": (0, "root")}
    groups: dict[str, int] = {"root": 0}
    for g in spec.get("groups") or ():
        if isinstance(g, dict) and isinstance(g.get("gid"), int):
            groups[str(g.get("name"))] = g["gid"]
    for u in spec.get("users") or ():
        if isinstance(u, dict) and isinstance(u.get("uid"), int):
            name = str(u.get("name"))
            group = str(u.get("group", name))
            users[name] = (u["uid"], group)
            groups.setdefault(group, u["uid"])
    return users, groups


def from_spec(spec: dict) -> Expectations:
    """Expectations from a resolved spec (the embedded JSON, already defaulted by the spec stage;
    defaults are filled again from the schema so a partial document still reads)."""
    init = _section(spec, "init")
    logging = _section(spec, "logging")
    sysctls = _section(spec, "sysctls")
    users, groups = _accounts(spec)
    user = str(spec.get("user") or "root")
    uid, group = users.get(user, (None, None))
    gid = groups.get(group) if group is not None else None
    volumes = []
    for v in spec.get("volumes") or ():
        if not isinstance(v, dict) or not isinstance(v.get("path"), str):
            continue
        owner = str(v.get("owner") or user)
        fix = v.get("fix_ownership", True)
        volumes.append(VolumeExpectation(v["path"], owner, users.get(owner, (None, ""))[0], bool(fix)))
    values = sysctls.get("values") or {}
    return Expectations(
        found_spec=True,
        name=spec.get("name") if isinstance(spec.get("name"), str) else None,
        init=str(init.get("kind", "s6")),
        restart=str(init.get("restart", "stop")),
        log_dir=str(logging["dir"]),
        log_stdout=bool(logging["stdout"]),
        user=user,
        uid=uid,
        gid=gid,
        volumes=tuple(volumes),
        sysctls=tuple(sorted((str(k), _sysctl_text(v)) for k, v in values.items())) if isinstance(values, dict) else (),
        sysctl_policy=str(sysctls["policy"]),
    )


def _sysctl_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def without_spec() -> Expectations:
    """What a gen image would be held to with an empty spec: schema defaults."""
    return Expectations(**{**from_spec({}).__dict__, "found_spec": False})


def parse_embedded(text: str) -> Expectations | None:
    """Expectations from /etc/gen/spec.json's text; None if it is not a JSON object."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return from_spec(data) if isinstance(data, dict) else None
