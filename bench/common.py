"""What every benchmark shares: bounded subprocesses, medians, an isolated containers storage under
bench/.work/, and the Markdown rows bench/run collects.

A benchmark module has `PARAMS: dict[Size, <its parameters>]` and `measure(size: Size) -> Section`;
it raises BenchError (or AssertionError from a correctness check) instead of reporting a number it
could not verify.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from generator.builder.reproduce import unmount_under

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"  # git-ignored: storages, data files, temporary projects
VENV_BIN = REPO / ".venv" / "bin"
# Every bench storage is a store of gen's own: podman's locks stay in it (see the file's comment).
CONTAINERS_CONF = REPO / "generator" / "data" / "containers-isolated.conf"
DEFAULT_TIMEOUT = 600


class BenchError(RuntimeError):
    """A benchmark could not run here (missing tool, failed build); the reason is reported."""


class Size(enum.Enum):
    """How much every benchmark does. FULL's numbers are the results; QUICK is a first look with
    fewer repetitions and less data; SMOKE runs each section's real code path once at its smallest
    size, with the bundled examples built for the build host's platform only, to prove it can run:
    its numbers mean nothing."""

    SMOKE = "smoke"
    QUICK = "quick"
    FULL = "full"

    @property
    def native_only(self) -> bool:
        """Build the bundled examples for the host's platform only (no emulated foreign builds)."""
        return self is Size.SMOKE


def size_from_argv(argv: Sequence[str]) -> Size:
    """The size a module run on its own uses: `python logs.py smoke`; quick by default."""
    return Size(argv[1]) if len(argv) > 1 else Size.QUICK


@dataclass
class Section:
    """One benchmark's results: a Markdown table plus notes (targets met or missed, skips)."""

    title: str
    columns: list[str]
    rows: list[list[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.rows:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in self.rows]
            lines.append("")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(action: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin=None,
    stdout=subprocess.PIPE,
) -> subprocess.CompletedProcess:
    """A subprocess with a time bound; a failure names the command and its last output lines."""
    proc = subprocess.run(
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        env=env,
        cwd=cwd,
        text=stdout == subprocess.PIPE,
        check=False,
    )
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        tail = "\n".join((err or "").strip().splitlines()[-8:])
        raise BenchError(f"{' '.join(map(str, argv[:6]))} ... exited {proc.returncode}:\n{tail}")
    return proc


def require(*tools: str) -> None:
    from generator.builder.host import find_tool

    missing = [t for t in tools if find_tool(t) is None]
    if missing:
        raise BenchError(f"not installed: {', '.join(missing)}")


@dataclass(frozen=True)
class Storage:
    """An isolated containers storage (never the user's images) with gen's containers.conf."""

    root: Path

    @property
    def host(self):
        from generator.builder.host import Host

        return Host.from_env(self.root, env=self.env)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        env["GEN_STORAGE_ROOT"] = str(self.root)
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        return env

    def podman(
        self, *args: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True, stdout=subprocess.PIPE
    ) -> subprocess.CompletedProcess:
        return run(
            ["podman", *self.host.podman_flags(), *args], timeout=timeout, check=check, env=self.env, stdout=stdout
        )

    def gen(
        self, *args: str, project: Path, timeout: float = DEFAULT_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess:
        return run([str(VENV_BIN / "gen"), *args], timeout=timeout, check=check, env=self.env, cwd=project)


def remove_storage(root: Path) -> None:
    if root.exists():
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


# A top-level `platforms:` entry, in flow (`[a, b]`) or block (`- a` lines) style.
_PLATFORMS = re.compile(r"^platforms:[^\n]*\n(?:[ \t]*-[^\n]*\n)*", re.MULTILINE)


def copy_bundled_specs(dest: Path, native_only: bool) -> None:
    """A fresh copy of the bundled specs (a stale one would measure old images); native_only drops
    every `platforms:` list, so the chain builds for the build host's platform alone."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(REPO / "specs", dest)
    if native_only:
        for spec in dest.glob("*.yaml"):
            spec.write_text(_PLATFORMS.sub("", spec.read_text()))


@dataclass(frozen=True)
class Examples:
    """The bundled specs copied into project, rendered and built in storage."""

    project: Path
    storage: Storage

    def ref(self, name: str) -> str:
        """The first tag gen gave a bundled image."""
        manifest = json.loads((self.project / "output" / name / "gen-manifest.json").read_text())
        return f"localhost/gen/{name}:{manifest['tags'][0]}"


def examples_for(size: Size) -> Examples:
    """Native-only builds get a project and storage of their own: the same tags built for other
    platforms must not replace the full run's images, nor the other way round."""
    if size.native_only:
        return Examples(WORK / "examples-native", Storage(WORK / "storage-native"))
    return Examples(WORK / "examples", Storage(WORK / "storage"))


def bundled_examples(size: Size) -> Examples:
    """The bundled examples, rendered and built; later calls find them up to date (gen skips
    them), so every benchmark that needs the images can ask."""
    examples = examples_for(size)
    copy_bundled_specs(examples.project / "specs", size.native_only)
    examples.storage.gen("render", project=examples.project)
    examples.storage.gen("build", project=examples.project, timeout=1800)
    return examples


def stored(storage: Storage, ref: str):
    from generator.builder import storage as store

    found = store.inspect(storage.host, ref)
    if found is None:
        raise BenchError(f"{ref} is not in {storage.root}")
    return found
