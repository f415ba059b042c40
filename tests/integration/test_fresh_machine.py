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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from generator.build.host import Host

pytestmark = [pytest.mark.integration, pytest.mark.rehearsal]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/gen-tests/fresh-debian:12"
MACHINE_SECONDS = 3600  # the rehearsal container's life at most: the test's steps are bounded below it
CHECKOUT = "/root/gen"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
# TLS trust settings a site sets machine-wide; their values are paths that exist in the rehearsal
# once ca-certificates is installed. Nothing else of the host's environment goes in.
TRUST_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "REQUESTS_CA_BUNDLE",
                   "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
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


@pytest.fixture(scope="module")
def fresh_debian(gen_host: Host, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Debian 12 minbase image bootstrapped from the host's apt sources: what a minimal cloud
    image has, less cloud-init, plus the site's CA files (not yet in any trust store)."""
    work = tmp_path_factory.mktemp("fresh-rootfs")
    tarball = work / "rootfs.tar"
    hooks = []
    if LOCAL_CAS.is_dir():
        hooks = [f"--customize-hook=mkdir -p \"$1{LOCAL_CAS}\"",
                 f"--customize-hook=copy-in {' '.join(str(p) for p in sorted(LOCAL_CAS.glob('*.crt')))} {LOCAL_CAS}"]
    sources = _host_sources()
    assert sources, "the host has no apt sources to bootstrap the rehearsal from"
    subprocess.run(["mmdebstrap", "--variant=minbase", "--format=tar", *hooks, "bookworm", str(tarball), *sources],
                   check=True, capture_output=True, timeout=600)
    subprocess.run(["podman", *gen_host.global_flags(), "import", str(tarball), IMAGE], env=gen_host.env,
                   check=True, capture_output=True, timeout=300)
    tarball.unlink()
    return IMAGE


class Machine:
    """A running rehearsal container; run() executes a shell line in the checkout, as root."""

    def __init__(self, host: Host, name: str, env: dict[str, str], costs_file: Path):
        self.host, self.name, self.env, self.costs_file = host, name, env, costs_file
        self.timings: dict[str, float] = {}

    def run(self, line: str, timeout: float, label: str | None = None) -> subprocess.CompletedProcess:
        argv = ["podman", *self.host.global_flags(), "exec", "-w", CHECKOUT]
        argv += [f"--env={k}={v}" for k, v in self.env.items()]
        started = time.monotonic()
        try:
            proc = subprocess.run([*argv, self.name, "bash", "-c", line], env=self.host.env, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            said = subprocess.CompletedProcess(exc.cmd, -1, _text(exc.stdout), _text(exc.stderr))
            pytest.fail(f"`{line}` did not finish in {timeout:.0f} s on the fresh machine:\n{_tail(said)}")
        self.timings[label or line] = round(time.monotonic() - started, 1)
        return proc


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _tail(proc: subprocess.CompletedProcess, lines: int = 30) -> str:
    """The end of each stream: apt's progress fills stdout, the reason is on stderr."""
    return "\n".join(["\n".join(text.strip().splitlines()[-lines:]) for text in (proc.stdout, proc.stderr)])


def _copy_checkout(dest: Path) -> None:
    """The tracked files as they are in the working tree: what a fresh clone has, nothing built."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True,
                           timeout=60).stdout.decode().split("\0")
    for rel in filter(None, files):
        source = ROOT / rel
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


@pytest.fixture(scope="module")
def machine(gen_host: Host, fresh_debian: str, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("fresh-machine")
    checkout, storage = work / "checkout", work / "containers"
    _copy_checkout(checkout)
    storage.mkdir()
    name = f"gen-rehearsal-{os.getpid()}"
    env = {k: os.environ[k] for k in TRUST_VARIABLES if os.environ.get(k, "").startswith("/etc/ssl/")}
    podman = ["podman", *gen_host.global_flags()]
    # Its own network namespace, as a machine has: the inner podman's bridge and rules stay inside.
    # The sleep is bounded, so a container that outlives a killed test run still ends.
    subprocess.run([*podman, "run", "-d", "--rm", "--name", name, "--privileged", "-v", f"{checkout}:{CHECKOUT}",
                    "-v", f"{storage}:/var/lib/containers", fresh_debian, "sleep", str(MACHINE_SECONDS)],
                   env=gen_host.env, check=True, capture_output=True, timeout=120)
    try:
        yield Machine(gen_host, name, env, tmp_path_factory.getbasetemp() / "fresh-machine-costs.json")
    finally:
        subprocess.run([*podman, "rm", "-f", "-t", "0", name], env=gen_host.env, capture_output=True, timeout=120)
        subprocess.run([*podman, "rmi", "-f", fresh_debian], env=gen_host.env, capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)  # gigabytes of inner images and a venv


@pytest.mark.skipif(os.geteuid() != 0, reason="the rehearsal runs a privileged container with nested builds: "
                    "run the tests as root")
def test_the_readme_commands_work_on_a_fresh_machine(machine: Machine):
    fresh = machine.run(f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(NOT_PREINSTALLED)} 2>/dev/null "
                        "| grep ' installed$' || true", timeout=60, label="preinstalled")
    assert fresh.stdout.strip() == "", f"the rehearsal machine is not fresh: {fresh.stdout}"
    release = machine.run("cat /etc/debian_version", timeout=60, label="release")
    assert release.stdout.startswith("12."), f"the rehearsal machine is not Debian 12: {release.stdout}"
    before = machine.run(PACKAGES_MB_COMMAND, timeout=60, label="packages before")
    main, tests = readme_setup_commands()

    built = machine.run(main, timeout=1200)
    assert built.returncode == 0, f"{main} failed on a fresh machine:\n{_tail(built)}"
    assert re.search(r"^built app-base@arm64 ", built.stdout, re.M), _tail(built)

    doctor = machine.run(".venv/bin/gen doctor", timeout=300)
    assert doctor.returncode == 0, f"gen doctor found problems after {main}:\n{_tail(doctor)}"

    verified = machine.run(".venv/bin/gen verify app-base --json", timeout=600)
    assert verified.returncode == 0, _tail(verified, 80)
    checks = {c["name"]: c for c in json.loads(verified.stdout)["checks"]}
    assert checks["structure test"]["status"] == "pass", checks["structure test"]
    assert [n for n, c in checks.items() if c["status"] != "pass"] == [], checks

    unit = machine.run(f'{tests} -m "not integration"', timeout=1200)
    summary = _tail(unit, 15)
    assert unit.returncode == 0, summary
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary and "failed" not in summary, summary

    # Every benchmark section, end to end at its smallest size: one that cannot start fails here.
    bench = machine.run("bench/run --smoke --output /tmp/bench.md", timeout=900)
    notes = machine.run("grep -E -A8 'could not run here|FAILED|crashed' /tmp/bench.md || true", timeout=60)
    assert bench.returncode == 0 and not notes.stdout.strip(), \
        f"a benchmark did not run on a fresh machine:\n{notes.stdout or _tail(bench, 60)}"

    # For the README: what the commands cost on 2 cores, beside pytest's own temporary directories.
    usage = machine.run(f"du -sm /var/lib/containers .venv tests/tools/node_modules | cut -f1 | paste -sd' '; "
                        f"{PACKAGES_MB_COMMAND}", timeout=120, label="disk")
    costs = {"seconds": machine.timings, "packages_mb_before": before.stdout.strip(),
             "mb_storage_venv_node_modules_packages": usage.stdout.split()}
    machine.costs_file.write_text(json.dumps(costs, indent=1) + "\n")
