"""Work dealt out to forked copies of this process, on every core: a project of 1000 specs is
Python work (parsing, checking, rendering) that one process does at one core's speed.

A child is a fork, not a new interpreter: it starts at once with everything the parent has
loaded, runs one function, and answers with bytes on a pipe. It never returns into the parent's
code, never prints and leaves through os._exit (the parent's open files and atexit handlers are
the parent's). Ctrl-C is the parent's to handle: it kills the children, and a child the parent
could not kill (the parent itself killed, or interrupted again while reaping) dies with it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pickle
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from generator.errors import GenError

T = TypeVar("T")
R = TypeVar("R")

_ANSWERED, _FAILED = b"0", b"1"  # the first byte of an answer
MAX_PROCESSES = 4  # past this the children mostly wait on the file system
_ENDING = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # held back across a fork
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def process_count(items: int, minimum: int, most: int = MAX_PROCESSES) -> int:
    """How many processes share `items` pieces of work: one below `minimum` (a fork costs more
    than it saves there) or where fork is missing, else one per core, at most `most`."""
    if items < minimum or not hasattr(os, "fork"):
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), most))


def deal_out(items: Sequence[T], minimum: int, work: Callable[[Sequence[T]], R]) -> list[R]:
    """work(share) for every process's share of items (the k-th process gets items[k::n]), in
    process order, this process's first; a child's result comes back pickled. One process, and
    one share of everything, below `minimum` items."""
    processes = process_count(len(items), minimum)
    if processes == 1:
        return [work(items)]
    children: list[Forked] = []
    try:
        for k in range(1, processes):
            children.append(Forked.start(functools.partial(_pickled, work, items[k::processes])))
        results = [work(items[0::processes])]
        results += [pickle.loads(child.answer()) for child in children]
    finally:
        for child in children:
            child.reap()
    return results


def _pickled(work: Callable[[Sequence[T]], R], share: Sequence[T]) -> bytes:
    return pickle.dumps(work(share), pickle.HIGHEST_PROTOCOL)


def interleave(shares: Sequence[Sequence[R]]) -> list[R]:
    """deal_out's per-item results back in the items' order (item i was in share i % n)."""
    n = len(shares)
    return [shares[i % n][i // n] for i in range(sum(map(len, shares)))]


class Forked:
    """One forked process running `work` and the read end of its answer pipe."""

    def __init__(self, pid: int, answers: int) -> None:
        self.pid = pid
        self._answers = answers
        self._reaped = False
        self._status = "running"

    @classmethod
    def start(cls, work: Callable[[], bytes]) -> Forked:
        """The signals that end gen are held back from before the fork until the child is known
        here (and, in the child, until it ignores SIGINT): a Ctrl-C in between would leave a child
        no reap() ends, or raise KeyboardInterrupt into the parent's own code inside the child."""
        read_end, write_end = os.pipe()
        parent = os.getpid()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _ENDING)
        try:
            pid = os.fork()
        except BaseException:
            os.close(read_end)
            os.close(write_end)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            raise
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _serve(write_end, work, parent, previous)
        os.close(write_end)
        child = cls(pid, read_end)
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a Ctrl-C held back is raised here
        except BaseException:
            child.reap()
            raise
        return child

    def answer(self) -> bytes:
        """What work returned; GenError when it raised or the process died first. An interrupt
        while waiting leaves the pipe open, for reap() to close."""
        chunks = []
        while chunk := os.read(self._answers, 1 << 16):
            chunks.append(chunk)
        data = b"".join(chunks)
        self._close()
        self._reap()
        if data[:1] == _ANSWERED:
            return data[1:]
        if data[:1] == _FAILED:
            raise GenError(data[1:].decode(errors="replace"))
        raise GenError(f"a forked gen process ended without an answer ({self._status})")

    def reap(self) -> None:
        """Make sure the child is gone (an interrupt or an error here ends its share): killed
        first, whatever else fails, then waited for, and its pipe closed. Safe to call again."""
        try:
            if not self._reaped:
                try:
                    os.kill(self.pid, signal.SIGKILL)  # not yet waited for: the pid is still the child's
                except ProcessLookupError:
                    pass
                self._reap()
        finally:
            self._close()

    def _close(self) -> None:
        fd, self._answers = self._answers, -1  # forgotten first: an interrupt never closes it twice
        if fd >= 0:
            os.close(fd)

    def _reap(self) -> None:
        if self._reaped:
            return
        _, status = os.waitpid(self.pid, 0)
        self._reaped = True
        self._status = f"exit status {os.waitstatus_to_exitcode(status)}"


def _serve(answers: int, work: Callable[[], bytes], parent: int, mask: Iterable[int]) -> None:
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it kills this process
        _die_with(parent)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # what start() held back
        try:
            data = _ANSWERED + work()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - said by the parent as one line, never a traceback here
            data = _FAILED + f"a forked gen process failed: {type(exc).__name__}: {exc}".encode()
        view = memoryview(data)
        while view:
            view = view[os.write(answers, view) :]
    except BaseException:  # noqa: BLE001, S110 - the parent sees no answer and says so
        code = 1
    finally:
        os._exit(code)


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when the parent ends, however it ends (SIGKILL, a
    second Ctrl-C inside reap()): a child left running goes on writing into a staging tree beside
    output/ that the parent has given up. Linux's prctl; elsewhere reap() alone ends children.
    The kernel means the forking thread by "parent": gen forks from its main thread only."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the request was made
        os._exit(1)
