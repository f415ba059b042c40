"""Which sysctls can work in a container, decided at render time.

The kernel namespaces only some parameters: the IPC ones (kernel.shm*, kernel.msg*, kernel.sem,
fs.mqueue.*), the UTS names, and most of net.* (per network namespace). Everything else is one
value for the whole node, so a container cannot set it without changing the host. Kubernetes
further allows only a small "safe" subset by default; the other namespaced keys need the
kubelet's --allowed-unsafe-sysctls.
"""

from __future__ import annotations

from enum import Enum

from generator.model import Image


class SysctlClass(str, Enum):
    SAFE = "safe"  # namespaced and on Kubernetes' default allow-list
    NAMESPACED = "namespaced"  # namespaced, but Kubernetes must allow it explicitly
    NODE = "node"  # not namespaced: cannot be set from a container


KUBERNETES_SAFE = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ping_group_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)

_NAMESPACED_EXACT = frozenset(
    {
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.hostname",
        "kernel.domainname",
    }
)
_NAMESPACED_PREFIXES = ("fs.mqueue.", "net.")
# net.core keys that stay global to the host even with a network namespace.
_NET_GLOBAL = frozenset(
    {
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.core.rmem_default",
        "net.core.wmem_default",
        "net.core.netdev_max_backlog",
        "net.core.optmem_max",
        "net.core.netdev_budget",
    }
)


def classify(key: str) -> SysctlClass:
    if key in KUBERNETES_SAFE:
        return SysctlClass.SAFE
    if key in _NET_GLOBAL:
        return SysctlClass.NODE
    if key in _NAMESPACED_EXACT or key.startswith(_NAMESPACED_PREFIXES):
        return SysctlClass.NAMESPACED
    return SysctlClass.NODE


def node_level_keys(image: Image) -> tuple[str, ...]:
    return tuple(k for k, _ in image.sysctls.values if classify(k) is SysctlClass.NODE)


def sysctl_config(image: Image) -> str:
    """/etc/gen/sysctl.conf: `key=value` lines in the sysctl.conf format the hook reads."""
    return "".join(f"{key}={value}\n" for key, value in image.sysctls.values)
