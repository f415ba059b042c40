"""What an image should do, read from the resolved spec gen embeds in it (/etc/gen/spec.json).

Reading it from the image, not from specs/, means `gen verify IMAGE` works for any gen image,
even one built elsewhere. An image without the file gets the schema defaults, so every check
still runs and the table says what the image lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from generator.contract import EmbeddedSpec, EmbeddedSpecError
from generator.model import (
    User,
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
from generator.plan.accounts import spec_account_ids
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
    ready_timeout_ms: int | None  # the longest readiness timeout; None: none declared
    profiles: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (name, env) of each
    default_profile: str | None
    forward_to: str  # logging.forward.to: the collector the image forwards its logs to; "" none
    forward_facility: str
    spec_problem: str | None = None  # why a readable embedded spec was not used

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


def from_spec(spec: EmbeddedSpec) -> Expectations:
    """Expectations from a resolved spec (the embedded JSON, already defaulted by the spec stage;
    defaults are filled again so an older gen's document reads too), through the model, so verify
    holds an image to the same rules render followed. A document the schema refuses is reported,
    and the schema defaults stand in."""
    data = with_defaults(spec.document)
    problem = first_schema_problem(data)
    if problem is not None:
        return replace(without_spec(), spec_problem=problem)
    return _expectations(data, found_spec=True)


def without_spec() -> Expectations:
    """What a gen image would be held to with a spec of schema defaults only."""
    return _expectations(with_defaults({}), found_spec=False)


def _expectations(data: dict, found_spec: bool) -> Expectations:
    """Expectations of a spec document with the schema's defaults, through the model's sections."""
    users = users_from(data["users"])
    uids, gids = spec_account_ids(users, groups_from(data["groups"], users))
    app_user = data.get("user") or "root"
    init, logging, sysctls = init_from(data["init"]), logging_from(data["logging"]), sysctls_from(data["sysctls"])
    return Expectations(
        found_spec=found_spec,
        name=data.get("name"),
        init=init.kind,
        restart=init.restart,
        log_dir=logging.dir,
        log_stdout=logging.stdout,
        user=app_user,
        uid=uids.get(app_user),
        gid=_primary_gid(app_user, users, gids),
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


def _primary_gid(user: str, users: tuple[User, ...], gids: dict[str, int]) -> int | None:
    """The gid of the app user's primary group: root's, or a spec user's group the spec fixes."""
    if user == "root":
        return 0
    account = next((u for u in users if u.name == user), None)
    return gids.get(account.group) if account else None


def _longest_readiness(data: dict) -> int | None:
    return longest_timeout_ms(readiness_from(d.get("ready")) for d in (data, *data["services"]))


def parse_embedded(text: str) -> Expectations | None:
    """Expectations from /etc/gen/spec.json's text; None if it is not a JSON object."""
    try:
        return from_spec(EmbeddedSpec.from_json(text, EMBEDDED_SPEC))
    except EmbeddedSpecError:
        return None
