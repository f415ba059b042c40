"""What an image should do, read from the resolved spec gen embeds in it (/etc/gen/spec.json).

Reading it from the image, not from specs/, means `gen verify IMAGE` works for any gen image,
even one built elsewhere. An image without the file gets the schema defaults, so every check
still runs and the table says what the image lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from generator.model import (
    groups_from,
    init_from,
    logging_from,
    longest_timeout_ms,
    readiness_from,
    sysctls_from,
    users_from,
    volumes_from,
)
from generator.plan import SPEC_PATH
from generator.plan.hints import RuntimeHints
from generator.plan.sysctl import SysctlClass, classify
from generator.spec.merge import with_defaults
from generator.spec.schema_check import first_schema_problem

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
    spec_problem: str | None = None  # why a readable embedded spec was not used
    ready_timeout_ms: int | None = None  # the longest readiness timeout; None: none declared
    profiles: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # (name, env) of each
    default_profile: str | None = None
    forward_to: str = ""  # logging.forward.to: the collector the image forwards its logs to
    forward_facility: str = "user"

    def default_profile_env(self) -> dict[str, str]:
        """What the profile a start without GEN_PROFILE gets puts in CMD's environment."""
        return dict(dict(self.profiles).get(self.default_profile or "", ()))

    def settable_sysctls(self) -> tuple[tuple[str, str], ...]:
        """The sysctls a runtime can set with --sysctl (node-level keys cannot be)."""
        return tuple((k, v) for k, v in self.sysctls if classify(k) is not SysctlClass.NODE)

    def sysctl_run_flags(self, image_ref: str) -> list[str]:
        """The `--sysctl` flags `gen hints` prints for this image."""
        hints = RuntimeHints(image_ref, tuple((k, v, classify(k)) for k, v in self.settable_sysctls()), (), ())
        return hints.run_flags()


def from_spec(spec: dict) -> Expectations:
    """Expectations from a resolved spec (the embedded JSON, already defaulted by the spec stage;
    defaults are filled again so an older gen's document reads too), through the model, so verify
    holds an image to the same rules render followed. A document the schema refuses is reported,
    and the schema defaults stand in."""
    data = with_defaults(spec)
    problem = first_schema_problem(data)
    if problem is not None:
        return replace(without_spec(), spec_problem=problem)
    users = users_from(data["users"])
    groups = {g.name: g.gid for g in groups_from(data["groups"], users)}
    app_user = data.get("user") or "root"
    uids = {"root": 0} | {u.name: u.uid for u in users}
    app = next((u for u in users if u.name == app_user), None)
    init, logging, sysctls = init_from(data["init"]), logging_from(data["logging"]), sysctls_from(data["sysctls"])
    return Expectations(
        found_spec=True,
        name=data["name"],
        init=init.kind,
        restart=init.restart,
        log_dir=logging.dir,
        log_stdout=logging.stdout,
        user=app_user,
        uid=uids.get(app_user),
        gid=0 if app_user == "root" else groups.get(app.group) if app else None,
        volumes=tuple(
            VolumeExpectation(v.path, v.owner, uids.get(v.owner), v.fix_ownership)
            for v in volumes_from(data["volumes"], users, data.get("user"))
        ),
        sysctls=sysctls.values,
        sysctl_policy=sysctls.policy,
        ready_timeout_ms=_longest_readiness(data),
        profiles=tuple((name, tuple(sorted(p["env"].items()))) for name, p in sorted(data["profiles"].items())),
        default_profile=data.get("default_profile"),
        forward_to=logging.forward_to,
        forward_facility=logging.forward_facility,
    )


def _longest_readiness(data: dict) -> int | None:
    return longest_timeout_ms(readiness_from(d.get("ready")) for d in (data, *data["services"]))


def without_spec() -> Expectations:
    """What a gen image would be held to with a spec of schema defaults only."""
    data = with_defaults({})
    init, logging, sysctls = init_from(data["init"]), logging_from(data["logging"]), sysctls_from(data["sysctls"])
    return Expectations(
        found_spec=False,
        name=None,
        init=init.kind,
        restart=init.restart,
        log_dir=logging.dir,
        log_stdout=logging.stdout,
        user="root",
        uid=0,
        gid=0,
        volumes=(),
        sysctls=sysctls.values,
        sysctl_policy=sysctls.policy,
    )


def parse_embedded(text: str) -> Expectations | None:
    """Expectations from /etc/gen/spec.json's text; None if it is not a JSON object."""
    try:
        data = json.loads(text)
        return from_spec(data) if isinstance(data, dict) else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than any spec is
        return None
