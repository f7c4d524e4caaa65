"""The supervisor of several workers: forks them on one listening socket, passes signals on,
restarts a worker that dies while serving, and gives up when workers die before they listen.

A worker that dies at start (its store cannot be opened, a crash in the app's start-up) would
otherwise be replaced in a loop while the kernel queues connections on the socket nobody
accepts from, and clients hang. Each worker tells the supervisor through a pipe once it
listens. Workers that exit before that are started again after 0.25 s, 0.5 s, 1 s, 2 s; when
QUICK_FAILURES such attempts in a row have failed (about 4 s), the supervisor stops with exit
status 1 and a message that says so. Workers started together count as one attempt, so the
number of workers does not change when it gives up. A worker that was listening is
restarted as before, at most once a second, and any worker that listens ends the count.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("gateway")

QUICK_FAILURES = 5  # attempts in a row whose workers exit before listening: it gives up
FIRST_BACKOFF = 0.25  # seconds before the next attempt after a start failure, doubled each time
SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_PR_SET_PDEATHSIG = 1
_TICK = 0.1  # seconds between looks at the workers


# What a worker runs: given the write end of its "listening" pipe, it serves until stopped and
# never returns (it ends with os._exit).
WorkerMain = Callable[[int], None]


@dataclass
class Worker:
    pid: int
    started: float  # monotonic
    listening_pipe: int  # read end; one byte arrives once the worker listens
    attempt: int  # workers started together share one
    listening: bool = False


def die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM when the supervisor dies, however it dies
    (kill -9 included), so no worker ever serves on unsupervised. Elsewhere: nothing."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tell_listening(pipe: int) -> None:
    """In the worker, once it serves: the supervisor counts it as started."""
    with contextlib.suppress(OSError):
        os.write(pipe, b"!")
        os.close(pipe)


class Supervisor:
    def __init__(
        self, count: int, sock: socket.socket, stop_budget: float, worker_main: WorkerMain
    ) -> None:
        self.count = count
        self.sock = sock
        self.stop_budget = stop_budget  # how long a worker may take to stop gracefully
        self.worker_main = worker_main
        self.workers: dict[int, Worker] = {}
        self.me = os.getpid()
        self.stopping = False
        self.gave_up = False
        self.start_failures = 0  # attempts in a row whose workers exited before listening
        self.attempt = 0  # the current attempt: workers spawned together
        self.failed_attempt = -1  # the last attempt counted as failed
        self.wanted = 0  # workers to start once `spawn_at` has come
        self.spawn_at = 0.0
        self.reloads = 0

    # -- signals: the handlers only note what was asked; the loop acts on it -----------------
    # A handler may run at any moment (another thread, such as the metrics listener's, can
    # take the signal while this one has it blocked): between a fork and the line that
    # records the child, a handler that signalled the known children would miss that one and
    # leave it orphaned.

    def _stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _reload(self, signum: int, _frame: object) -> None:
        self.reloads += 1

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        for _ in range(self.count):
            self._spawn()
        self._loop()
        return 1 if self.gave_up else 0

    def _loop(self) -> None:
        deadline = 0.0
        reloaded = 0
        # Workers, or (between start failures) workers still to start.
        while self.workers or (self.wanted and not self.stopping):
            if self.stopping and not deadline:
                deadline = time.monotonic() + self.stop_budget + 5.0
                self._begin_stop()
            if self.reloads != reloaded and not self.stopping:
                reloaded = self.reloads
                self._tell(signal.SIGHUP)  # each worker reloads its own policy
            self._note_listening()
            if not self._reap():
                if self.stopping and time.monotonic() > deadline:
                    self._kill_late()
                    deadline = time.monotonic() + 5.0
                self._spawn_wanted()
                time.sleep(_TICK)

    def _begin_stop(self) -> None:
        self.wanted = 0
        self._tell(signal.SIGTERM)
        # The workers keep accepting for their drain delay on their copies of the socket;
        # once they close theirs, the port is closed and new clients are refused at once
        # instead of waiting in a queue nobody reads.
        self.sock.close()

    def _reap(self) -> bool:
        """One exited worker handled, if any; False when none has exited."""
        try:
            # Polled, not blocking: a blocking wait resumes after the SIGTERM handler (PEP
            # 475) and would never look at the deadline if a worker hung.
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            self.workers.clear()
            return False
        except InterruptedError:
            return True
        if pid == 0:
            return False
        worker = self.workers.pop(pid, None)
        if worker is None:
            return True
        self._note_listening_of(worker)
        os.close(worker.listening_pipe)
        code = os.waitstatus_to_exitcode(wait_status)
        if not self.stopping:
            self._after_exit(worker, code)
        return True

    def _after_exit(self, worker: Worker, code: int) -> None:
        if worker.listening:
            log.error("worker %d exited with %d; starting another", worker.pid, code)
            lived = time.monotonic() - worker.started
            self._want_one(max(0.0, 1.0 - lived))  # a worker that dies at once: not a spin
            return
        if worker.attempt != self.failed_attempt:
            self.failed_attempt = worker.attempt
            self.start_failures += 1
        if self.start_failures >= QUICK_FAILURES:
            log.error(
                "giving up: workers exited before listening in %d attempts in a row (the "
                "last with status %d); the errors above say why. Not starting more: clients "
                "would wait on a port nobody serves",
                self.start_failures,
                code,
            )
            self.gave_up = True
            self.stopping = True
            return
        backoff = FIRST_BACKOFF * 2 ** (self.start_failures - 1)
        log.error(
            "worker %d exited with %d before listening (attempt %d of %d); starting another in %gs",
            worker.pid,
            code,
            self.start_failures,
            QUICK_FAILURES,
            backoff,
        )
        self._want_one(backoff)

    def _want_one(self, after: float) -> None:
        self.wanted += 1
        self.spawn_at = max(self.spawn_at, time.monotonic() + after)

    def _spawn_wanted(self) -> None:
        if not self.wanted or self.stopping or time.monotonic() < self.spawn_at:
            return
        self.attempt += 1
        while self.wanted:
            self.wanted -= 1
            self._spawn()

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        # Signals wait while we fork, so the child does not run a handler before it resets
        # them; it unblocks after that, so a pending SIGTERM then stops it.
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                self._become_worker(write_end)
            os.close(write_end)
            self.workers[pid] = Worker(pid, time.monotonic(), read_end, self.attempt)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)

    def _become_worker(self, listening_pipe: int) -> None:
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        die_with_parent()
        if os.getppid() != self.me:  # the supervisor died before the line above took effect
            os._exit(0)
        for other in self.workers.values():
            os.close(other.listening_pipe)
        # SIGHUP stays held (blocked) until the app takes it over: a reload asked for while
        # the worker starts is carried out once it can be, never SIGHUP's default (the end).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS - {signal.SIGHUP})
        try:
            self.worker_main(listening_pipe)  # ends with os._exit
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            os._exit(1)  # never unwind into the supervisor's code in the worker

    def _note_listening(self) -> None:
        for worker in self.workers.values():
            self._note_listening_of(worker)

    def _note_listening_of(self, worker: Worker) -> None:
        if worker.listening:
            return
        with contextlib.suppress(BlockingIOError):
            if os.read(worker.listening_pipe, 1):
                worker.listening = True
                self.start_failures = 0  # workers can start: the failures were not in a row

    def _tell(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _kill_late(self) -> None:
        for late in list(self.workers):
            log.error("worker %d did not stop in time; killing it", late)
            with contextlib.suppress(ProcessLookupError):
                os.kill(late, signal.SIGKILL)
