"""The README's set-up commands on a brand-new Debian 12 machine, rehearsed in a container.

A minbase rootfs is bootstrapped from the host's apt sources (no buildah, podman, mmdebstrap, s6 or
python3-venv in it) and started as a privileged container; the checkout (tracked files only) is
copied in, and there run, as a newcomer types them: the README's main command, `gen doctor`,
`gen verify` on one image, the README's test command (unit tests, none skipped) and every
benchmark at its smallest size. Any install step that .ci/install-deps lacks fails one of them.

What nested builds need, found here: `--privileged` (buildah mounts overlay and registers nothing
itself, but mmdebstrap mounts /proc and /dev in its chroot, and `podman run` needs cgroups and
namespaces); the inner containers storage on a bind mount of a host directory, because overlay
cannot stack on the container's own overlay root; the host's network, so the inner apt and pip
reach the same archive as the host; binfmt_misc is the kernel's, so the host's qemu handlers
(registered with the F flag) serve the inner arm64 builds. A site that intercepts TLS trusts its
own CA on every machine: the host's local CAs go into the rootfs as a site's image would have them.

The rehearsal takes about 25 minutes, nearly all of it inside its own container and containers
storage, so it runs in a background thread from the first integration test on (started by
`start_rehearsal`, from tests/integration/conftest.py), beside the rest of the suite; its test
is ordered last and waits for it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from generator.builder.host import Host
from generator.builder.reproduce import unmount_under

pytestmark = [pytest.mark.integration, pytest.mark.rehearsal]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/gen-tests/fresh-debian:12"
MACHINE_SECONDS = 5400  # the rehearsal container's life at most: its steps are bounded below it
CHECKOUT = "/root/gen"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
# TLS trust settings a site sets machine-wide; their values are paths that exist in the rehearsal
# once ca-certificates is installed. Nothing else of the host's environment goes in.
TRUST_VARIABLES = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
)
PACKAGES_MB_COMMAND = "dpkg-query -W -f='${Installed-Size}\\n' | awk '{kb += $1} END {print int(kb / 1024)}'"
# Nothing the README's commands install may be there before they run.
NOT_PREINSTALLED = ("buildah", "podman", "mmdebstrap", "s6", "python3-venv", "arch-test", "catatonit")


def readme_setup_commands() -> list[str]:
    """The indented command lines of the README's Set-up section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_readme_has_exactly_the_two_setup_commands():
    assert readme_setup_commands() == ["./build-examples", "./tests/run"]


def _host_sources() -> list[str]:
    apt = Path("/etc/apt")
    files = [apt / "sources.list"] if (apt / "sources.list").is_file() else []
    files += sorted((apt / "sources.list.d").glob("*.sources")) + sorted((apt / "sources.list.d").glob("*.list"))
    return [str(f) for f in files if f.read_text().strip()]


def outer_podman(host: Host) -> list[str]:
    """podman on the rehearsal's own storage (and its own state directory: see Host.podman_flags)."""
    return ["podman", *host.podman_flags()]


def fresh_debian(host: Host, work: Path) -> str:
    """A Debian 12 minbase image bootstrapped from the host's apt sources: what a minimal cloud
    image has, less cloud-init, plus the site's CA files (not yet in any trust store)."""
    tarball = work / "rootfs.tar"
    hooks = []
    if LOCAL_CAS.is_dir():
        hooks = [
            f'--customize-hook=mkdir -p "$1{LOCAL_CAS}"',
            f"--customize-hook=copy-in {' '.join(str(p) for p in sorted(LOCAL_CAS.glob('*.crt')))} {LOCAL_CAS}",
        ]
    sources = _host_sources()
    assert sources, "the host has no apt sources to bootstrap the rehearsal from"
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", "--format=tar", *hooks, "bookworm", str(tarball), *sources],
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        [*outer_podman(host), "import", str(tarball), IMAGE],
        env=host.env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    tarball.unlink()
    return IMAGE


class Machine:
    """A running rehearsal container; run() executes a shell line in the checkout, as root."""

    def __init__(self, host: Host, name: str, env: dict[str, str]):
        self.host, self.name, self.env = host, name, env
        self.timings: dict[str, float] = {}

    def run(self, line: str, timeout: float, label: str) -> subprocess.CompletedProcess:
        argv = [*outer_podman(self.host), "exec", "-w", CHECKOUT]
        argv += [f"--env={k}={v}" for k, v in self.env.items()]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [*argv, self.name, "bash", "-c", line],
                env=self.host.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            said = subprocess.CompletedProcess(exc.cmd, -1, _text(exc.stdout), _text(exc.stderr))
            raise RuntimeError(
                f"`{line}` did not finish in {timeout:.0f} s on the fresh machine:\n{_tail(said)}"
            ) from exc
        self.timings[label] = round(time.monotonic() - started, 1)
        return proc


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _tail(proc: subprocess.CompletedProcess, lines: int = 30) -> str:
    """The end of each stream: apt's progress fills stdout, the reason is on stderr."""
    return "\n".join(["\n".join(text.strip().splitlines()[-lines:]) for text in (proc.stdout, proc.stderr)])


def _pytest_failures(proc: subprocess.CompletedProcess, lines: int = 80) -> str:
    """What pytest said about its failures (the tests' headers and their E lines) and its summary:
    the plain tail is the durations table, which names no reason."""
    text = proc.stdout or ""
    start = text.find("= FAILURES =")
    failures = (
        [line for line in text[start:].splitlines() if line.startswith(("E ", "___", "FAILED", "ERROR"))]
        if start >= 0
        else []
    )
    return "\n".join([*failures[:lines], _tail(proc, 5)])


def _copy_checkout(dest: Path) -> None:
    """The tracked files as they are in the working tree: what a fresh clone has, nothing built."""
    files = (
        subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True, timeout=60)
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        source = ROOT / rel
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


class Rehearsal:
    """The fresh machine's steps, run in a background thread: each step's result by label, up to
    the first that fails (the test reads them), the machine's timings, and any error of the
    set-up itself. Its containers storage is its own, under `work`, so the session's builds never
    wait on its locks."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.host = Host.from_env(work / "storage", env=env)
        self.results: dict[str, subprocess.CompletedProcess] = {}
        self.timings: dict[str, float] = {}
        self.error = ""
        self.costs_file = work.parent / "fresh-machine-costs.json"  # kept after stop()
        self.name = f"gen-rehearsal-{os.getpid()}"
        self._thread = threading.Thread(target=self._run, name="rehearsal", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail(f"the rehearsal did not finish in {timeout:.0f} s")
        if self.error:
            pytest.fail(f"the rehearsal could not run: {self.error}")

    def stop(self) -> None:
        """Remove the machine (a step still running in it ends) and everything under work."""
        podman = outer_podman(self.host)
        subprocess.run([*podman, "rm", "-f", "-t", "0", self.name], env=self.host.env, capture_output=True, timeout=120)
        self._thread.join(60)
        subprocess.run([*podman, "rmi", "-f", IMAGE], env=self.host.env, capture_output=True, timeout=120)
        unmount_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)  # gigabytes of inner images and a venv

    def _run(self) -> None:
        try:
            machine = self._start_machine()
            for label, line, timeout in _steps():
                result = machine.run(line, timeout=timeout, label=label)
                self.results[label] = result
                if result.returncode != 0 and label in STOP_ON_FAILURE:
                    break
            self.timings = machine.timings
        except Exception as exc:  # noqa: BLE001 - reported by the test, in the main thread
            self.error = f"{type(exc).__name__}: {exc}"

    def _start_machine(self) -> Machine:
        image = fresh_debian(self.host, self.work)
        checkout, storage = self.work / "checkout", self.work / "containers"
        _copy_checkout(checkout)
        storage.mkdir()
        env = {k: os.environ[k] for k in TRUST_VARIABLES if os.environ.get(k, "").startswith("/etc/ssl/")}
        # Its own network namespace, as a machine has: the inner podman's bridge and rules stay inside.
        # The sleep is bounded, so a container that outlives a killed test run still ends.
        subprocess.run(
            [
                *outer_podman(self.host),
                "run",
                "-d",
                "--rm",
                "--name",
                self.name,
                "--privileged",
                "-v",
                f"{checkout}:{CHECKOUT}",
                "-v",
                f"{storage}:/var/lib/containers",
                image,
                "sleep",
                str(MACHINE_SECONDS),
            ],
            env=self.host.env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        return Machine(self.host, self.name, env)


# Steps after which nothing else can work when they fail.
STOP_ON_FAILURE = ("preinstalled", "release", "main")


def _steps() -> list[tuple[str, str, float]]:
    """(label, shell line, timeout) in order; the timeouts allow for the rest of the suite
    running beside the rehearsal on the same 2 cores."""
    main, tests = readme_setup_commands()
    fresh = (
        f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(NOT_PREINSTALLED)} 2>/dev/null "
        "| grep ' installed$' || true"
    )
    return [
        ("preinstalled", fresh, 60),
        ("release", "cat /etc/debian_version", 60),
        ("packages before", PACKAGES_MB_COMMAND, 60),
        ("main", main, 2400),
        ("doctor", ".venv/bin/gen doctor", 300),
        ("verify", ".venv/bin/gen verify app-base --json", 900),
        ("unit tests", f'{tests} -m "not integration"', 1800),
        # Every benchmark section, end to end at its smallest size: one that cannot start fails here.
        ("bench", "bench/run --smoke --output /tmp/bench.md", 1800),
        ("bench notes", "grep -E -A8 'could not run here|FAILED|crashed' /tmp/bench.md || true", 60),
        # For the README: what the commands cost on 2 cores, beside pytest's own temporary directories.
        (
            "disk",
            f"du -sm /var/lib/containers .venv tests/tools/node_modules | cut -f1 | paste -sd' '; "
            f"{PACKAGES_MB_COMMAND}",
            120,
        ),
    ]


def start_rehearsal(work: Path, env: dict[str, str]) -> Rehearsal:
    rehearsal = Rehearsal(work, env)
    rehearsal.start()
    return rehearsal


REHEARSAL_SECONDS = MACHINE_SECONDS - 300


@pytest.mark.skipif(
    os.geteuid() != 0, reason="the rehearsal runs a privileged container with nested builds: run the tests as root"
)
def test_the_readme_commands_work_on_a_fresh_machine(rehearsal: Rehearsal):
    rehearsal.wait(REHEARSAL_SECONDS)
    results = rehearsal.results
    assert results["preinstalled"].stdout.strip() == "", (
        f"the rehearsal machine is not fresh: {results['preinstalled'].stdout}"
    )
    assert results["release"].stdout.startswith("12."), f"not Debian 12: {results['release'].stdout}"
    main, _ = readme_setup_commands()
    built = results["main"]
    assert built.returncode == 0, f"{main} failed on a fresh machine:\n{_tail(built)}"
    assert re.search(r"^built app-base@arm64 ", built.stdout, re.M), _tail(built)

    doctor = results["doctor"]
    assert doctor.returncode == 0, f"gen doctor found problems after {main}:\n{_tail(doctor)}"

    verified = results["verify"]
    assert verified.returncode == 0, _tail(verified, 80)
    checks = {c["name"]: c for c in json.loads(verified.stdout)["checks"]}
    assert checks["structure test"]["status"] == "pass", checks["structure test"]
    # Every check of what app-base declares passes; the others (profiles, log forwarding) skip.
    assert [n for n, c in checks.items() if c["status"] == "fail"] == [], checks
    assert {n for n, c in checks.items() if c["status"] == "skip"} <= {"profiles", "log forwarding"}, checks
    assert checks["readiness and health"]["status"] == "pass", checks["readiness and health"]

    unit = results["unit tests"]
    summary = _tail(unit, 15)
    assert unit.returncode == 0, _pytest_failures(unit)
    # pytest's counts, not test names (one has "skipped" in its name)
    assert re.search(r"\d+ passed", summary) and not re.search(r"\d+ (skipped|failed)", summary), summary

    bench, notes = results["bench"], results["bench notes"]
    assert bench.returncode == 0 and not notes.stdout.strip(), (
        f"a benchmark did not run on a fresh machine:\n{notes.stdout or _tail(bench, 60)}"
    )

    costs = {
        "seconds": rehearsal.timings,
        "packages_mb_before": results["packages before"].stdout.strip(),
        "mb_storage_venv_node_modules_packages": results["disk"].stdout.split(),
    }
    rehearsal.costs_file.write_text(json.dumps(costs, indent=1) + "\n")
