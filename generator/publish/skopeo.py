"""skopeo calls: copy between containers storage and registries, inspect a tag's digest, list tags.

Credentials: skopeo finds them itself in the standard containers auth file (REGISTRY_AUTH_FILE,
${XDG_RUNTIME_DIR}/containers/auth.json, ~/.docker/config.json); gen never reads or prints them,
and scrubs anything credential-shaped from error text before showing it. The one exception is
`gen login` in a CI job: it takes a user and password from CI variables (ci_credentials) and
hands the password to `skopeo login` on stdin, which writes that auth file for every later call.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

from generator.builder.host import Host
from generator.builder.proc import ToolError, run_quiet
from generator.errors import GenError
from generator.publish.target import Registry

COPY_TIMEOUT = 1800.0
QUERY_TIMEOUT = 120.0
_USERINFO = re.compile(r"(://)[^/@\s]+@")
_SECRET_FIELD = re.compile(r"(?i)((?:password|passwd|token|auth|secret|creds)[\"']?\s*[:=]\s*)\S+")
_NOT_FOUND = ("manifest unknown", "name unknown", "not found", "404")
# Registries answer 5xx now and then (seen: docker-registry's "500 Internal Server Error" while
# reusing a blob across repositories); copies are idempotent, so these are retried.
_TRANSIENT = re.compile(r"\b50[0234]\b|connection reset|broken pipe|i/o timeout|TLS handshake timeout|EOF\b")
TRANSIENT_ATTEMPTS = 3


def is_transient(message: str) -> bool:
    return _TRANSIENT.search(message) is not None


class RegistryError(GenError):
    """A registry operation failed (exit 1); the message says which image and what to check."""


def scrub(text: str) -> str:
    """text without user:password@ in URLs or values of credential-like fields."""
    return _SECRET_FIELD.sub(r"\1<redacted>", _USERINFO.sub(r"\1<redacted>@", text))


# CI variables a job logs in with, in order: the user's own (any registry), then GitLab's for its
# project registry (CI_REGISTRY). GitHub's workflow passes its token in as GEN_REGISTRY_PASSWORD.
CREDENTIAL_VARIABLES = (("GEN_REGISTRY_USER", "GEN_REGISTRY_PASSWORD"), ("CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD"))


def ci_credentials(env: dict[str, str], registry_host: str) -> tuple[str, str, str] | None:
    """(user, password, the variables' names) for logging in to registry_host, or None. GitLab's
    CI_REGISTRY_* hold only for its own registry, CI_REGISTRY."""
    for user_var, password_var in CREDENTIAL_VARIABLES:
        if user_var.startswith("CI_") and env.get("CI_REGISTRY", "") != registry_host:
            continue
        if env.get(user_var) and env.get(password_var):
            return env[user_var], env[password_var], f"{user_var}/{password_var}"
    return None


def tls_flag(name: str, verify: bool) -> list[str]:
    return [f"--{name}={'true' if verify else 'false'}"]


class Skopeo:
    """skopeo with gen's environment; every call is bounded in time."""

    def __init__(self, host: Host):
        self.host = host

    def _run(self, argv: list[str], timeout: float, what: str):
        for attempt in range(TRANSIENT_ATTEMPTS):
            try:
                return run_quiet(
                    ["skopeo", "--command-timeout", f"{int(timeout)}s", *argv], self.host.env, timeout=timeout + 30
                )
            except ToolError as exc:
                if attempt + 1 < TRANSIENT_ATTEMPTS and is_transient(str(exc)):
                    time.sleep(2**attempt)  # a registry's 5xx or a dropped connection: try again
                    continue
                raise RegistryError(
                    f"{what}: {scrub(str(exc).splitlines()[0] if str(exc) else 'skopeo failed')}{_hint(str(exc))}"
                ) from None
        raise AssertionError("unreachable")

    def login(self, registry: Registry, user: str, password: str) -> None:
        """`skopeo login` with the password on stdin (never on a command line, never shown)."""
        argv = ["skopeo", "login", *tls_flag("tls-verify", registry.tls_verify), "--username", user]
        try:
            run_quiet([*argv, "--password-stdin", registry.host], self.host.env, QUERY_TIMEOUT, stdin_text=password)
        except ToolError as exc:
            said = scrub(str(exc).splitlines()[-1] if str(exc) else "skopeo login failed").replace(
                password, "<redacted>"
            )
            raise RegistryError(f"logging in to {registry.host} as {user}: {said}") from None

    def push(self, local_ref: str, registry: Registry, name: str, tag: str) -> str:
        """Copy an image from gen's storage to registry/name:tag; its manifest digest."""
        with tempfile.TemporaryDirectory(prefix="gen-push-") as tmp:
            digestfile = Path(tmp) / "digest"
            self._run(
                [
                    "copy",
                    "--quiet",
                    *tls_flag("dest-tls-verify", registry.tls_verify),
                    "--digestfile",
                    str(digestfile),
                    self.host.skopeo_ref(local_ref),
                    registry.ref(name, tag),
                ],
                COPY_TIMEOUT,
                f"pushing {local_ref} to {registry.repository(name)}:{tag}",
            )
            return digestfile.read_text().strip()

    def copy_tag(self, src: Registry, src_tag: str, dst: Registry, dst_tag: str, name: str) -> str:
        """Registry to registry, manifest byte for byte (--preserve-digests); its digest."""
        with tempfile.TemporaryDirectory(prefix="gen-copy-") as tmp:
            digestfile = Path(tmp) / "digest"
            # --all: an index moves with every platform's image, byte for byte.
            self._run(
                [
                    "copy",
                    "--quiet",
                    "--all",
                    "--preserve-digests",
                    *tls_flag("src-tls-verify", src.tls_verify),
                    *tls_flag("dest-tls-verify", dst.tls_verify),
                    "--digestfile",
                    str(digestfile),
                    src.ref(name, src_tag),
                    dst.ref(name, dst_tag),
                ],
                COPY_TIMEOUT,
                f"copying {src.repository(name)}:{src_tag} to {dst.repository(name)}:{dst_tag}",
            )
            return digestfile.read_text().strip()

    def push_layout(self, layout: Path, registry: Registry, name: str, tag: str) -> str:
        """Copy the one manifest of an OCI layout directory to registry/name:tag, byte for byte (an
        artifact such as an SBOM must keep its media types); its manifest digest."""
        with tempfile.TemporaryDirectory(prefix="gen-attach-") as tmp:
            digestfile = Path(tmp) / "digest"
            self._run(
                [
                    "copy",
                    "--quiet",
                    "--preserve-digests",
                    *tls_flag("dest-tls-verify", registry.tls_verify),
                    "--digestfile",
                    str(digestfile),
                    f"oci:{layout}",
                    registry.ref(name, tag),
                ],
                COPY_TIMEOUT,
                f"pushing {layout.name} to {registry.repository(name)}:{tag}",
            )
            return digestfile.read_text().strip()

    def pull_ref(self, remote: str, tls_verify: bool, local_ref: str, policy: list[str] | None = None) -> None:
        """Copy any registry reference (repo:tag or repo@digest) into gen's storage as local_ref
        (image id = config digest, kept); policy: skopeo's --policy/--registries.d flags, when the
        pull runs under a policy of gen's choosing."""
        self._run(
            [
                *(policy or []),
                "copy",
                "--quiet",
                *tls_flag("src-tls-verify", tls_verify),
                f"docker://{remote}",
                self.host.skopeo_ref(local_ref),
            ],
            COPY_TIMEOUT,
            f"pulling {remote}",
        )

    def fetch_layout(self, remote: str, tls_verify: bool, layout: Path) -> bool:
        """Copy registry reference remote (repo:tag) byte for byte into an OCI layout directory;
        False when it does not exist."""
        argv = [
            "--command-timeout",
            f"{int(COPY_TIMEOUT)}s",
            "copy",
            "--quiet",
            "--preserve-digests",
            *tls_flag("src-tls-verify", tls_verify),
            f"docker://{remote}",
            f"oci:{layout}",
        ]
        return self._lookup(argv, COPY_TIMEOUT + 30, f"fetching {remote}") is not None

    def raw_manifest(self, remote: str, tls_verify: bool) -> bytes | None:
        """The manifest (or index) bytes of registry reference remote; None when it does not exist."""
        argv = ["inspect", "--raw", *tls_flag("tls-verify", tls_verify), f"docker://{remote}"]
        found = self._lookup(argv, QUERY_TIMEOUT, f"inspecting {remote}")
        return found.encode() if found is not None else None

    def digest(self, remote: str, tls_verify: bool) -> str | None:
        """The manifest digest a registry reference (repo:tag) points at; None when it does not exist."""
        argv = [
            "inspect",
            "--no-tags",
            *tls_flag("tls-verify", tls_verify),
            "--format",
            "{{.Digest}}",
            f"docker://{remote}",
        ]
        found = self._lookup(argv, QUERY_TIMEOUT, f"inspecting {remote}")
        return found.strip() if found is not None else None

    def tags(self, registry: Registry, name: str) -> list[str]:
        """Tags of registry/name; [] when the repository does not exist."""
        repository = registry.repository(name)
        argv = ["list-tags", *tls_flag("tls-verify", registry.tls_verify), f"docker://{repository}"]
        found = self._lookup(argv, QUERY_TIMEOUT, f"listing tags of {repository}")
        return sorted(json.loads(found).get("Tags") or []) if found is not None else []

    def _lookup(self, argv: list[str], timeout: float, what: str) -> str | None:
        """skopeo ARGV's stdout; None when the registry says the thing does not exist; any other
        failure is a RegistryError saying what was done, scrubbed of credentials, with a hint."""
        proc = run_quiet(["skopeo", *argv], self.host.env, timeout=timeout, check=False)
        if proc.returncode == 0:
            return proc.stdout
        if any(marker in proc.stderr.lower() for marker in _NOT_FOUND):
            return None
        said = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "skopeo failed"
        raise RegistryError(f"{what}: {scrub(said)}{_hint(proc.stderr)}")


def _hint(text: str) -> str:
    lower = text.lower()
    if "http response to https client" in lower:
        return (
            "\n  the registry speaks plain HTTP: for a loopback registry add --insecure-registry; otherwise give it TLS"
        )
    if "unauthorized" in lower or "authentication required" in lower or "denied" in lower:
        return (
            "\n  log in first (`skopeo login HOST` or `podman login HOST`, which write the standard auth "
            "file), or point REGISTRY_AUTH_FILE at an auth file"
        )
    if "connection refused" in lower or "no such host" in lower or "i/o timeout" in lower:
        return "\n  the registry is not reachable: check the host and port"
    return ""
