"""The podman calls the checks make, through the build stage's subprocess helper.

Every call is bounded in time, every container gets a unique name and is removed afterwards,
and the storage and containers.conf are the Host's, as for the build. Tests replace `execute`
(the subprocess boundary) with a fake podman.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from generator.builder.host import Host
from generator.builder.proc import ToolError, run_quiet
from generator.builder.storage import inspect_data

Execute = Callable[[list[str], dict[str, str], float], subprocess.CompletedProcess]


def run_subprocess(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return run_quiet(argv, env, timeout=timeout, check=False)


@dataclass(frozen=True)
class Outcome:
    """What one podman call gave: exit code, output, and how long it took."""

    code: int
    stdout: str
    stderr: str
    seconds: float

    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""


class Podman:
    """podman for the checks: one-shot runs, detached containers, exec, stop, copy out."""

    def __init__(self, host: Host, execute: Execute = run_subprocess, clock: Callable[[], float] = time.monotonic):
        self.host = host
        self._execute = execute
        self._clock = clock
        # os/arch[/variant] of a foreign image under test, passed to every run: podman otherwise
        # warns on stderr that the image's platform is not the host's, which checks of stderr would
        # take for the image's own output.
        self.run_platform = ""
        # Every run gets a /run tmpfs owned by the container's user (`--tmpfs /run:U`): set for a
        # foreign s6-overlay image where qemu ignores setuid, so s6-overlay-suexec cannot take /run
        # as root at start (it refuses to start instead); on the real machine it can.
        self.run_owned_by_user = False

    def call(self, args: Iterable[str], timeout: float = 60) -> Outcome:
        argv = ["podman", *self.host.podman_flags(), *args]
        start = self._clock()
        proc = self._execute(argv, self.host.env, timeout)
        return Outcome(proc.returncode, proc.stdout or "", proc.stderr or "", self._clock() - start)

    def inspect_image(self, ref: str) -> dict | None:
        """The image's inspect data (the build stage's query, run through this Podman's
        execute), or None when storage has no such image."""
        return inspect_data(self.host, ref, self._execute, timeout=60)

    def platform_flags(self) -> list[str]:
        return ["--platform", self.run_platform] if self.run_platform else []

    def run_flags(self, options: Iterable[str]) -> list[str]:
        """options with the platform's flags first and, where set, /run owned by the user."""
        options = list(options)
        if not self.run_owned_by_user:
            return [*self.platform_flags(), *options]
        given = [i for i, o in enumerate(options[1:], 1) if options[i - 1] == "--tmpfs" and o.split(":")[0] == "/run"]
        for i in given:
            options[i] = "/run:U"
        return [*self.platform_flags(), *([] if given else ["--tmpfs", "/run:U"]), *options]

    @staticmethod
    def health_flags(healthcheck: bool) -> list[str]:
        """The image's HEALTHCHECK is left to the caller that asks for it: podman schedules it
        with a systemd timer, and on a host without systemd says so in two error lines on every
        run, which checks that count the container's own lines would take for its output."""
        return [] if healthcheck else ["--no-healthcheck"]

    def run(
        self,
        image: str,
        args: Iterable[str] = (),
        *,
        options: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        entrypoint: str | None = None,
        timeout: float = 60,
        name: str | None = None,
        remove: bool = True,
        healthcheck: bool = False,
    ) -> Outcome:
        """`podman run` in the foreground; the container is removed afterwards unless remove
        is False (the caller then copies from it and calls remove())."""
        name = name or new_name()
        argv = ["run", "--name", name]
        if remove:
            argv.append("--rm")
        argv += [*self.health_flags(healthcheck), *self.run_flags(options), *_env_flags(env)]
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        argv += [image, *args]
        try:
            return self.call(argv, timeout)
        except BaseException:  # timed out or interrupted: the container may exist, even still run
            self.remove(name)
            raise

    def start(
        self,
        image: str,
        args: Iterable[str] = (),
        *,
        options: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        healthcheck: bool = False,
    ) -> str:
        """Start a detached container; returns its name. Raises ToolError if it did not start."""
        name = new_name()
        flags = [*self.health_flags(healthcheck), *self.run_flags(options), *_env_flags(env)]
        try:
            started = self.call(["run", "-d", "--name", name, *flags, image, *args], timeout)
        except BaseException:  # interrupted (Ctrl-C) while podman created it: the caller never gets the name
            self.remove(name)
            raise
        if started.code != 0:
            self.remove(name)
            raise ToolError(f"podman run -d {image} failed (exit {started.code}): {started.last_error_line()}")
        return name

    def exec(self, name: str, argv: Iterable[str], timeout: float = 30) -> Outcome:
        return self.call(["exec", name, *argv], timeout)

    def stop(self, name: str, grace: int) -> Outcome:
        """`podman stop` with a grace time in seconds; Outcome.seconds is the stop time."""
        return self.call(["stop", "--time", str(grace), name], timeout=grace + 60)

    def wait(self, name: str, timeout: float = 60) -> int | None:
        """The exit code of a container once it has exited; None if it did not in time."""
        done = self.call(["wait", name], timeout=timeout)
        try:
            return int(done.stdout.strip().splitlines()[-1]) if done.code == 0 else None
        except (ValueError, IndexError):
            return None

    def running(self, name: str) -> bool:
        state = self.call(["container", "inspect", "--format", "{{.State.Running}}", name], timeout=30)
        return state.code == 0 and state.stdout.strip() == "true"

    def logs_tail(self, name: str, lines: int = 3) -> str:
        """The container's last output lines, joined: why it exited, in its own words."""
        got = self.call(["logs", "--tail", str(lines), name], timeout=30)
        text = (got.stderr + got.stdout) if got.code == 0 else ""
        return " / ".join(line.strip() for line in text.splitlines() if line.strip())

    def copy_out(self, name: str, path: str, dest: Path) -> Outcome:
        return self.call(["cp", f"{name}:{path}", str(dest)], timeout=120)

    def remove(self, name: str) -> None:
        """Remove the container and its anonymous volumes (an image's VOLUME makes one per run;
        `podman rm` alone leaves them behind)."""
        try:
            self.call(["rm", "--force", "--volumes", "--time", "0", name], timeout=60)
        except ToolError:
            pass  # best effort: a leftover container is visible in `podman ps -a`


def new_name() -> str:
    return f"gen-verify-{secrets.token_hex(6)}"


def _env_flags(env: Mapping[str, str] | None) -> list[str]:
    return [f"--env={key}={value}" for key, value in (env or {}).items()]


def poll(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """True as soon as predicate() is, False once timeout seconds have passed."""
    deadline = clock() + timeout
    while True:
        if predicate():
            return True
        if clock() >= deadline:
            return False
        sleep(interval)
