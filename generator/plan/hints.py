"""How to run an image so the runtime, not privileges, sets its sysctls and volumes.

One decision, three renderings: podman/docker flags, a compose service, a Kubernetes pod
fragment. The same facts go into image labels for platforms to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from generator.model import Image, longest_timeout_ms
from generator.plan.accounts import account_ids
from generator.plan.sysctl import SysctlClass, classify


@dataclass(frozen=True)
class RuntimeHints:
    image_ref: str
    sysctls: tuple[tuple[str, str, SysctlClass], ...]  # settable from the runtime (namespaced)
    node_level: tuple[tuple[str, str], ...]  # must be set on the host
    volumes: tuple[str, ...]
    run_as: tuple[int, int] | None = None  # (uid, gid) of a non-root PID 1; None: starts as root
    ready_timeout_ms: int | None = None  # the longest readiness the spec declares; None: none

    def run_flags(self) -> list[str]:
        flags = [f"--sysctl={key}={value}" for key, value, _ in self.sysctls]
        # A non-root init cannot re-own a root-owned host directory: podman's :U does it instead.
        suffix = ":U" if self.run_as else ""
        flags += [f"--volume=<host-dir>:{path}{suffix}" for path in self.volumes]
        return flags

    def compose(self, service: str) -> dict:
        body: dict = {"image": self.image_ref}
        if self.sysctls:
            body["sysctls"] = {key: value for key, value, _ in self.sysctls}
        if self.volumes:
            body["volumes"] = [f"./{service}{path.replace('/', '-')}:{path}" for path in self.volumes]
        return {"services": {service: body}}

    def kubernetes(self) -> dict:
        """A pod spec fragment; unsafe sysctls also need the kubelet's --allowed-unsafe-sysctls."""
        context: dict = {"sysctls": [{"name": key, "value": value} for key, value, _ in self.sysctls]}
        if self.run_as:
            uid, gid = self.run_as
            context.update(runAsNonRoot=True, runAsUser=uid, runAsGroup=gid)
            if self.volumes:
                context["fsGroup"] = gid  # volumes become the group's: a non-root init cannot re-own them
        return {"securityContext": context, **self.probes()}

    def probes(self) -> dict:
        """Kubernetes probes from the declared readiness: started once gen's init has marked
        start-up done (allowed the longest readiness timeout), ready and live while the
        supervision tree's health check passes."""
        if self.ready_timeout_ms is None:
            return {}
        marker = {"exec": {"command": ["sh", "-c", " || ".join(f"test -e {m}" for m in READY_MARKERS)]}}
        health = {"exec": {"command": [HEALTH_SCRIPT]}, "timeoutSeconds": 5}
        return {
            "startupProbe": {**marker, "periodSeconds": 1, "failureThreshold": -(-self.ready_timeout_ms // 1000) + 5},
            "readinessProbe": {**health, "periodSeconds": 5},
            "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 3},
        }

    def unsafe_for_kubernetes(self) -> tuple[str, ...]:
        return tuple(key for key, _, cls in self.sysctls if cls is SysctlClass.NAMESPACED)


# gen's s6 init: its health check, and the start-up marker (under /tmp where /run is not writable).
HEALTH_SCRIPT = "/usr/lib/gen/init/health"
READY_MARKERS = ("/run/gen/ready", "/tmp/gen-run/ready")


def longest_readiness_ms(image: Image) -> int | None:
    """The longest readiness timeout CMD or a service declares; None when none does."""
    return longest_timeout_ms((image.ready, *(s.ready for s in image.services)))


def runtime_hints(image: Image, image_ref: str) -> RuntimeHints:
    settable, node = [], []
    for key, value in image.sysctls.values:
        cls = classify(key)
        if cls is SysctlClass.NODE:
            node.append((key, value))
        else:
            settable.append((key, value, cls))
    return RuntimeHints(
        image_ref,
        tuple(settable),
        tuple(node),
        tuple(v.path for v in image.volumes),
        _non_root_ids(image),
        longest_readiness_ms(image) if image.init.kind != "none" else None,
    )


def _non_root_ids(image: Image) -> tuple[int, int] | None:
    if image.runs_as == "root":
        return None
    uids, gids = account_ids(image)
    account = image.user_named(image.runs_as)  # a base account's primary gid is not known: gid = uid
    uid = uids[image.runs_as]
    return uid, (gids[account.group] if account else uid)


def hint_labels(image: Image) -> dict[str, str]:
    """Labels a platform reads to set sysctls and volumes itself: comma-separated, sorted."""
    hints = runtime_hints(image, image.name)
    labels = {}
    if hints.sysctls:
        labels["dev.gen.hints.sysctls"] = ",".join(f"{k}={v}" for k, v, _ in hints.sysctls)
    if hints.node_level:
        labels["dev.gen.hints.node-sysctls"] = ",".join(f"{k}={v}" for k, v in hints.node_level)
    if hints.volumes:
        labels["dev.gen.hints.volumes"] = ",".join(hints.volumes)
    return labels
