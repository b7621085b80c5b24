"""Real child processes running the CLI, forked from a server that has imported cxrprobe once.

A fresh ``python -m cxrprobe`` spends 4-9 s importing torch, open_clip and the rest before it
does anything, and the crash-safety and resource-limit tests start about fifty processes. The
children here are real processes all the same (their own pid, memory and file descriptors; a
real SIGKILL or SIGINT, a real rlimit, a mount namespace of their own, dropped capabilities),
forked from a multiprocessing forkserver that imported the heavy modules once, so each starts in
milliseconds. Tests about start-up itself (``python -m``, settings read at import) still exec a
fresh interpreter (helpers.run_cli).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from conftest import CliResult

# What the server imports once, so that its children need not (import errors are ignored).
PRELOAD = [
    "processes", "cxrprobe.cli", "cxrprobe.commands.embed", "cxrprobe.commands.adapt", "cxrprobe.commands.fewshot",
    "cxrprobe.commands.zeroshot", "cxrprobe.heads.logreg", "cxrprobe.heads.knn", "cxrprobe.heads.zeroshot",
    "cxrprobe.heads.prototype", "open_clip", "torchvision", "matplotlib.pyplot", "faiss", "sklearn.linear_model",
]
MOUNT_FAILED = 97  # the exit status of a child whose full-disk mount failed


@functools.lru_cache(maxsize=1)
def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    # The server finds this module through PYTHONPATH (Python 3.11 does not hand it sys.path),
    # and never reaches for the network, whatever a test's own environment says.
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), saved.get("PYTHONPATH")]))
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return context


# --- what a child runs, and the limits it runs under --------------------------------------------

@dataclass(frozen=True)
class Cli:
    """``cxrprobe ARGS``: the real entry point, as the console script calls it."""

    args: tuple[str, ...]

    def __call__(self) -> None:
        from cxrprobe.cli import main

        main(list(self.args))


def nothing() -> None:
    pass


@dataclass(frozen=True)
class ReadFile:
    path: str

    def __call__(self) -> None:
        Path(self.path).read_bytes()


@dataclass(frozen=True)
class FileSizeLimit:
    """A simulated full disk for every writer, HDF5's C code included. Python ignores SIGXFSZ,
    so a write past the limit fails with EFBIG instead of killing the process."""

    limit_bytes: int

    def __enter__(self) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit_bytes, self.limit_bytes))

    def __exit__(self, *_: object) -> None:
        pass


_CLONE_NEWNS, _MS_REC, _MS_PRIVATE = 0x00020000, 0x4000, 1 << 18


@dataclass(frozen=True)
class FullDisk:
    """``mount_point`` becomes a nearly full tmpfs in a mount namespace of the child's own, which
    vanishes with it: no clean-up, nothing visible to anyone else. 16 KiB are left free, enough
    to start writing and not to finish. What is left on it at the end is listed in ``listing``."""

    mount_point: str
    listing: str

    def __enter__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if (libc.unshare(_CLONE_NEWNS) != 0
                or libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0
                or libc.mount(b"cxrprobe-test-full", self.mount_point.encode(), b"tmpfs", 0, b"size=256k") != 0):
            raise SystemExit(MOUNT_FAILED)
        Path(self.mount_point, "filler").write_bytes(bytes(245_760))

    def __exit__(self, *_: object) -> None:
        Path(self.listing).write_text("\n".join(sorted(os.listdir(self.mount_point))) + "\n")


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True)
class NoFileAccessOverride:
    """As root, drop the capabilities that ignore file modes, from this process and from the
    bounding set (so from whatever it execs), so that chmod 000 and read-only folders stop root
    as they stop anyone. A process that is not root has none to drop."""

    def __enter__(self) -> None:
        if os.geteuid() != 0:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        drop = (1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)
        header, data = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
        for field in ("effective", "permitted", "inheritable"):
            setattr(data[0], field, getattr(data[0], field) & ~drop)
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset")
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    def __exit__(self, *_: object) -> None:
        pass


def _child_main(action: Callable[[], None], cwd: str, env: dict[str, str], stdout: str, stderr: str,
                limits: Sequence[contextlib.AbstractContextManager]) -> None:
    for fd, path in ((1, stdout), (2, stderr)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    with contextlib.ExitStack() as stack:
        for limit in limits:
            stack.enter_context(limit)
        action()  # SystemExit(code) from the CLI becomes the exit status


# --- starting and watching a child ----------------------------------------------------------------

class Child:
    """A running child: poll it, signal it, wait for its exit status and output."""

    def __init__(self, action: Callable[[], None], cwd: Path, env: dict[str, str],
                 limits: Sequence[contextlib.AbstractContextManager]) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="cxrprobe-child-")
        self._out = os.path.join(self._folder.name, "stdout")
        self._err = os.path.join(self._folder.name, "stderr")
        for path in (self._out, self._err):  # there to read even if the child dies before writing
            Path(path).touch()
        self._process = _context().Process(target=_child_main,
                                           args=(action, str(cwd), env, self._out, self._err, tuple(limits)))
        self._process.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def signal(self, number: int) -> None:
        os.kill(self._process.pid, number)

    def wait(self, timeout: float = 300) -> CliResult:
        self._process.join(timeout)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
            raise TimeoutError(f"the child ran over {timeout} s")
        result = CliResult(self._process.exitcode, Path(self._out).read_text(), Path(self._err).read_text())
        self._process.close()
        self._folder.cleanup()
        return result


def environment(**extra: str) -> dict[str, str]:
    """The test process's environment, never in debug mode, with creation times pinned."""
    env = {k: v for k, v in os.environ.items() if k != "CXRPROBE_DEBUG"}
    return {**env, "SOURCE_DATE_EPOCH": "1700000000", **extra}


def start(*args: object, cwd: Path | None = None, limits: Sequence[contextlib.AbstractContextManager] = ()) -> Child:
    """``cxrprobe ARGS`` in a forked child; returns at once."""
    return Child(Cli(tuple(map(str, args))), cwd or Path.cwd(), environment(), limits)


def run(*args: object, cwd: Path | None = None, limits: Sequence[contextlib.AbstractContextManager] = (),
        timeout: float = 300) -> CliResult:
    """``cxrprobe ARGS`` in a forked child, to the end."""
    return start(*args, cwd=cwd, limits=limits).wait(timeout)


def kill_when(child: Child, ready: Callable[[], bool] = lambda: True, after: float = 0.0,
              timeout: float = 120) -> bool:
    """SIGKILL ``child`` once ``ready()`` holds and ``after`` more seconds have passed. True if
    it was killed; False if it ended first (then it must have succeeded)."""
    deadline = time.monotonic() + timeout
    while child.poll() is None and not ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the marker to kill on never appeared")
        time.sleep(0.002)
    end = time.monotonic() + after
    while child.poll() is None and time.monotonic() < end:
        time.sleep(0.002)
    if child.poll() is None:
        child.signal(9)
        result = child.wait()
        assert result.code == -9, result
        return True
    result = child.wait()
    assert result.code == 0, result.stderr
    return False


@functools.lru_cache(maxsize=1)
def can_mount_tmpfs() -> bool:
    with tempfile.TemporaryDirectory() as folder:
        listing = os.path.join(folder, "listing")
        os.mkdir(os.path.join(folder, "mnt"))
        child = Child(nothing, Path(folder), environment(), [FullDisk(os.path.join(folder, "mnt"), listing)])
        return child.wait(60).code == 0


@functools.lru_cache(maxsize=1)
def file_modes_bind_root() -> bool:
    """Whether NoFileAccessOverride makes a mode-000 file unreadable here."""
    with tempfile.NamedTemporaryFile() as handle:
        os.chmod(handle.name, 0)
        child = Child(ReadFile(handle.name), Path(tempfile.gettempdir()), environment(), [NoFileAccessOverride()])
        result = child.wait(60)
    return result.code != 0 and "PermissionError" in result.stderr
