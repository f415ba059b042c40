"""Runtime of a generated image against the usual alternatives, side by side in one run.

- Stop latency: `podman stop` of an app that exits 0 on SIGTERM, run (a) as gen's supervised CMD
  under s6, (b) as a shell-form PID 1 (signals ignored: the stop waits for the kill), (c) under
  `podman run --init` (catatonit). The exit code is checked with the time.
- Zombies: the app leaves 100 orphans that exit half a second later, then execs a process that
  never waits; zombies left in the container are counted with ps. Under gen's init s6-svscan
  reaps them; as PID 1 without an init, the never-waiting process inherits them.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass

from common import BenchError, Section, Size, Storage, bundled_examples, median, size_from_argv

ORPHANS = 100
APP = "trap 'exit 0' TERM; sleep 600 & wait"  # a well-behaved app: exits 0 on SIGTERM
STOP_TIMEOUT = 10


@dataclass(frozen=True)
class Params:
    runs: int  # stops timed per case, median taken


PARAMS = {Size.SMOKE: Params(1), Size.QUICK: Params(2), Size.FULL: Params(5)}


def started(storage: Storage, run_args: list[str]) -> str:
    name = f"gen-bench-{uuid.uuid4().hex[:8]}"
    storage.podman("run", "-d", "--name", name, *run_args, timeout=120)
    return name


def stop_seconds(storage: Storage, run_args: list[str]) -> tuple[float, int]:
    name = started(storage, run_args)
    try:
        time.sleep(1.5)  # let the init bring the service up
        begin = time.perf_counter()
        storage.podman("stop", "--time", str(STOP_TIMEOUT), name, timeout=60)
        seconds = time.perf_counter() - begin
        code = storage.podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        return seconds, int(code)
    finally:
        storage.podman("rm", "-f", "-v", name, check=False, timeout=60)


def zombies_in(storage: Storage, run_args: list[str]) -> int:
    name = started(storage, run_args)
    try:
        time.sleep(4)  # the orphans live 0.5 s
        states = storage.podman("exec", name, "ps", "-eo", "stat=").stdout.split()
        if not states:
            raise BenchError("ps listed no process in the container")
        return sum(state.startswith("Z") for state in states)
    finally:
        storage.podman("rm", "-f", "-v", name, check=False, timeout=60)


def measure(size: Size) -> Section:
    examples = bundled_examples(size)
    image = examples.ref("runtime")
    storage = examples.storage
    runs = PARAMS[size].runs
    section = Section(
        f"Runtime of a generated image ({image}; stop: median of {runs})",
        ["case", "stop (s)", "exit codes", f"zombies after {ORPHANS} orphans"],
    )
    orphan_script = f"i=0; while [ $i -lt {ORPHANS} ]; do (sleep 0.5 &); i=$((i+1)); done; exec sleep 600"
    cases = [
        ("gen image: CMD supervised by s6", [image, "sh", "-c", APP], [image, "sh", "-c", orphan_script]),
        (
            "shell-form PID 1, no init",
            ["--entrypoint", "sh", image, "-c", "sleep 600"],
            ["--entrypoint", "sh", image, "-c", orphan_script],
        ),
        (
            "podman run --init (catatonit)",
            ["--init", "--entrypoint", "sh", image, "-c", APP],
            ["--init", "--entrypoint", "sh", image, "-c", orphan_script],
        ),
    ]
    for label, stop_args, zombie_args in cases:
        results = [stop_seconds(storage, stop_args) for _ in range(runs)]
        section.rows.append(
            [
                label,
                round(median([r[0] for r in results]), 2),
                " ".join(map(str, sorted({r[1] for r in results}))),
                zombies_in(storage, zombie_args),
            ]
        )
    gen_row, init_row = section.rows[0], section.rows[2]
    if gen_row[2] != "0":
        raise AssertionError(f"gen's image stopped with exit codes {gen_row[2]}, expected 0")
    extra = gen_row[1] - init_row[1]
    section.notes.append(
        f"Target: stop within the app's own exit time plus 0.3 s, 0 zombies. The app's own exit time is "
        f"the --init case ({init_row[1]} s: podman's stop round trip with SIGTERM going straight to the app); "
        f"gen takes {extra:+.2f} s more and leaves {gen_row[3]} zombies "
        f"({'met' if extra <= 0.3 and gen_row[3] == 0 else 'missed'})."
    )
    section.notes.append(f"The shell-form PID 1 ignores SIGTERM, so podman waits its {STOP_TIMEOUT} s and kills (137).")
    return section


if __name__ == "__main__":
    print(measure(size_from_argv(sys.argv)).markdown())
