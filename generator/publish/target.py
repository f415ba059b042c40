"""Where images go: a registry host and an organization (namespace) in it, and whether TLS is checked.

TLS verification is on unless the user asks for `--insecure-registry`, which gen accepts only for
a loopback host: an unverified connection to anything else could hand images or credentials to
whoever sits on the path.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from generator.errors import UsageError

_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")
_ORG_PART = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*$")


@dataclass(frozen=True)
class Registry:
    """HOST[:PORT]/ORG; org may have several path components or be empty."""

    host: str
    org: str
    tls_verify: bool = True

    def repository(self, name: str) -> str:
        return f"{self.host}/{self.org}/{name}" if self.org else f"{self.host}/{name}"

    def ref(self, name: str, tag: str) -> str:
        """A skopeo reference of one tag."""
        return f"docker://{self.repository(name)}:{tag}"

    def __str__(self) -> str:
        return f"{self.host}/{self.org}" if self.org else self.host


def host_name(host: str) -> str:
    """The host without its port (and without the brackets of an IPv6 literal)."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if ":" in host else host


def is_loopback(host: str) -> bool:
    name = host_name(host).lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_registry(text: str, insecure: bool = False, option: str = "--registry") -> Registry:
    """HOST[:PORT]/ORG from the command line. Raises UsageError (exit 2) with the fix."""
    value = text.strip().removeprefix("docker://").rstrip("/")
    host, _, org = value.partition("/")
    if not host or not _HOST.match(host) or not ("." in host or ":" in host or host == "localhost"):
        raise UsageError(
            f"{option} {text!r}: expected HOST[:PORT]/ORG, e.g. registry.example.com/team or "
            "127.0.0.1:5000/team (the host needs a dot or a port so it is not read as an org)"
        )
    bad = [part for part in org.split("/") if org and not _ORG_PART.match(part)]
    if bad:
        raise UsageError(
            f"{option} {text!r}: {bad[0]!r} is not a valid repository path component "
            "(lowercase letters, digits, and . _ - between them)"
        )
    if insecure and not is_loopback(host):
        raise UsageError(
            f"--insecure-registry is allowed only for a loopback registry (127.0.0.1, localhost, "
            f"[::1]), not {host_name(host)!r}: give the registry a TLS certificate, or trust its CA "
            f"in /etc/containers/certs.d/{host}/ca.crt"
        )
    return Registry(host=host, org=org, tls_verify=not insecure)
