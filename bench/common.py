"""What every benchmark shares: bounded subprocesses, medians, an isolated containers storage under
bench/.work/, and the Markdown rows bench/run collects.

A benchmark module has `measure(quick: bool) -> Section`; it raises BenchError (or
AssertionError from a correctness check) instead of reporting a number it could not verify.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"  # git-ignored: storages, data files, temporary projects
VENV_BIN = REPO / ".venv" / "bin"
CONTAINERS_CONF = REPO / "generator" / "data" / "containers.conf"
DEFAULT_TIMEOUT = 600


class BenchError(RuntimeError):
    """A benchmark could not run here (missing tool, failed build); the reason is reported."""


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


def run(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
        env: dict[str, str] | None = None, cwd: Path | None = None, stdin=None, stdout=subprocess.PIPE,
        ) -> subprocess.CompletedProcess:
    """A subprocess with a time bound; a failure names the command and its last output lines."""
    proc = subprocess.run(list(argv), stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
                          env=env, cwd=cwd, text=stdout == subprocess.PIPE, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        tail = "\n".join((err or "").strip().splitlines()[-8:])
        raise BenchError(f"{' '.join(map(str, argv[:6]))} ... exited {proc.returncode}:\n{tail}")
    return proc


def require(*tools: str) -> None:
    from generator.build.host import find_tool

    missing = [t for t in tools if find_tool(t) is None]
    if missing:
        raise BenchError(f"not installed: {', '.join(missing)}")


@dataclass(frozen=True)
class Storage:
    """An isolated containers storage (never the user's images) with gen's containers.conf."""

    root: Path

    @property
    def host(self):
        from generator.build.host import Host

        return Host.from_env(self.root, env=self.env)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        env["GEN_STORAGE_ROOT"] = str(self.root)
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        return env

    def podman(self, *args: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
               stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
        return run(["podman", *self.host.global_flags(), *args], timeout=timeout, check=check, env=self.env,
                   stdout=stdout)

    def gen(self, *args: str, project: Path, timeout: float = DEFAULT_TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess:
        return run([str(VENV_BIN / "gen"), *args], timeout=timeout, check=check, env=self.env, cwd=project)


def unmount_under(directory: Path) -> None:
    """Overlay mounts containers storage left below directory, so it can be deleted."""
    prefix = str(directory.resolve()) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def remove_storage(root: Path) -> None:
    if root.exists():
        unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


SHARED_STORAGE = Storage(WORK / "storage")
EXAMPLES = WORK / "examples"


def bundled_examples() -> Path:
    """A copy of the bundled specs, rendered and built in SHARED_STORAGE; later calls find them up
    to date (gen skips them), so every benchmark that needs the images can ask."""
    if not (EXAMPLES / "specs").is_dir():
        shutil.copytree(REPO / "specs", EXAMPLES / "specs")
    SHARED_STORAGE.gen("render", project=EXAMPLES)
    SHARED_STORAGE.gen("build", project=EXAMPLES, timeout=1800)
    return EXAMPLES


def image_ref(name: str) -> str:
    """The first tag gen gave a bundled image."""
    import json

    manifest = json.loads((EXAMPLES / "output" / name / "gen-manifest.json").read_text())
    return f"localhost/gen/{name}:{manifest['tags'][0]}"


def stored(storage: Storage, ref: str):
    from generator.build import storage as store

    found = store.inspect(storage.host, ref)
    if found is None:
        raise BenchError(f"{ref} is not in {storage.root}")
    return found
