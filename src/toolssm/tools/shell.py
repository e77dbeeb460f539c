"""A sandboxed shell, in the style of mini-SWE-agent: a bash command goes in; stdout, stderr and the exit
code come out. The commands are written by a neural network, so the sandbox is a security boundary.
docs/sandbox.md lists every guarantee, how it is enforced, and the test that checks it.

Each command runs in a fresh `bubblewrap <https://github.com/containers/bubblewrap>`_ sandbox over the
episode's throwaway workspace (a temporary folder, deleted by ``close()``):

- namespaces: ``--unshare-all`` (user, pid, net, ipc, uts, cgroup): no network but a private loopback, no
  view of host processes; ``--disable-userns`` (no nested user namespaces, so no ``unshare -r`` to gain
  capabilities inside); ``--die-with-parent`` and the pid namespace kill every process of the command
  when it ends (a background process cannot outlive its command, let alone the episode);
  ``--new-session`` (no terminal injection into the caller).
- filesystem: only ``/usr`` (read-only, with the ``/bin``, ``/lib``, ``/lib64`` links), a private
  ``/proc``, a read-only size-capped tmpfs ``/dev`` holding only null, zero, full, random, urandom and tty,
  a size-capped ``/dev/shm`` and ``/tmp``, and the workspace read-write at ``/work``. No ``/etc``, no home,
  nothing of the project. The workspace is passed as an open file descriptor (``--bind-fd``), so no host
  path appears on bwrap's command line (``/proc/1/cmdline`` inside).
- workspace caps: run as root, the workspace is a tmpfs of ``Limits.workspace_bytes`` and
  ``Limits.workspace_inodes``, mounted on the host for the episode; ``files()`` reads at most
  ``Limits.read_bytes`` back into the caller and names what it skipped (`ShellSandbox.skipped`).
- environment: bwrap itself (its pid 1 in the namespace too, which a command can read in
  ``/proc/1/environ``) starts from the sandbox's small fixed environment, never the caller's;
  ``--clearenv`` plus ``--setenv`` give the command the same. The host's hostname is replaced by
  ``sandbox``. Run as root, the host user is dropped to ``nobody`` (uid 65534) before bwrap starts,
  because the kernel does not enforce RLIMIT_NPROC for root.
- limits: a cgroup (v1 ``memory`` and ``pids`` controllers, or v2 ``memory.max``/``pids.max``, whichever
  the host lets this process create) caps the memory and the process count of the whole sandbox
  together; ``prlimit`` inside the sandbox, inherited by every child, caps CPU seconds, address space,
  process count and file size per process. What the host cannot offer is said once, in one warning
  (`limits_in_force`). A wall-clock timeout kills the whole sandbox; stdout and stderr are read with a
  byte cap, and truncation is stated in the observation, e.g. ``[stdout truncated: 104857600 bytes,
  showing first 10000]``.
- the command goes in through a file descriptor (read by bash, then closed), never as an argument, so
  its length is not bounded by the kernel's argument limits; a command holding a NUL byte (which bash
  cannot take) is refused with a ``[refused: ...]`` observation, and nothing runs.
- start-up: the first process inside the finished sandbox writes to a pipe before it runs the command. If
  nothing arrives, the sandbox never came up (a loaded host can refuse a namespace for a moment), the
  command never ran, and the attempt is retried (``SETUP_ATTEMPTS``) before bwrap's error is reported.
- teardown: ``run`` returns only once the namespace's pid 1 (named by bwrap's ``--info-fd``) has finished
  exiting, which the kernel completes only after every process in the namespace is gone, and no process
  of bwrap's session or of the sandbox's cgroup is left. bwrap's outer process can exit a moment earlier.

If ``bwrap`` is missing the tool refuses to run (`SandboxUnavailable`, one line). It never falls back to
an unsandboxed shell on its own; ``unsafe_no_sandbox=True`` (documented in docs/tasks/codefix.md, for
trusted commands only, e.g. replaying one's own expert) runs bash directly with the same limits and
timeout but without isolation.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolssm.tools.base import ERR, Tool, register_tool

#: where the workspace appears inside the sandbox
WORKDIR = "/work"
NOBODY = 65534
SETUP_ATTEMPTS = 3  # tries to bring a sandbox up before its error becomes the observation
#: the device nodes of the sandbox's /dev (bwrap's ``--dev`` set, without a pty instance)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: processes of the sandbox beyond the command's own: bwrap's outer process and its pid 1, the wrappers
EXTRA_PIDS = 4
#: room in the episode's pids cgroup for finished commands' exited processes not yet reaped: a namespace's pid 1
#: that outlives bwrap's outer process is reparented to the host's init, which reaps it when it gets to it, and
#: until then it still counts in pids.current (one per command, measured: 32 after 32 commands, then dropping
#: in batches). Without the room, a long episode's later commands failed to fork ("fork: retry: Resource
#: temporarily unavailable"). A fork bomb is still stopped by RLIMIT_NPROC (nproc) inside its user namespace.
ORPHAN_ROOM = 256
NUL_REFUSAL = "the command contains a NUL byte, which bash cannot take; nothing ran"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is not installed (or cannot start); the shell tool refuses to run without it."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one command (and, for the workspace and the cgroup, one episode). Defaults fit
    tiny Python programs."""

    wall_s: float = 10.0
    """wall-clock timeout; the whole sandbox is killed when it runs out"""
    cpu_s: int = 5
    """RLIMIT_CPU per process"""
    memory_bytes: int = 512 * 2**20
    """RLIMIT_AS per process (address space)"""
    nproc: int = 32
    """RLIMIT_NPROC: processes of the sandbox user; also the cgroup's process cap (plus bwrap's own)"""
    file_bytes: int = 8 * 2**20
    """RLIMIT_FSIZE: the largest file a command may write"""
    output_bytes: int = 10_000
    """bytes of stdout (and of stderr) kept; the rest is counted and dropped"""
    tmp_bytes: int = 64 * 2**20
    """size of the sandbox's private /tmp"""
    total_memory_bytes: int = 1024 * 2**20
    """memory of all the sandbox's processes together, tmpfs pages they write included (cgroup)"""
    shm_bytes: int = 16 * 2**20
    """size of the sandbox's private /dev/shm"""
    dev_bytes: int = 64 * 2**10
    """size of the sandbox's /dev (read-only; it holds only device nodes and links)"""
    workspace_bytes: int = 64 * 2**20
    """size of the episode's workspace (a tmpfs, where the host lets this process mount one)"""
    workspace_inodes: int = 8192
    """files, folders and links the workspace can hold (same condition)"""
    read_bytes: int = 16 * 2**20
    """bytes `ShellSandbox.files` reads back into the caller at most; larger files are skipped, named"""


@dataclass
class ShellResult:
    command: str
    stdout: str
    stderr: str
    returncode: int
    stdout_bytes: int
    """bytes the command wrote to stdout (kept or not)"""
    stderr_bytes: int
    timed_out: bool = False
    limits: Limits = field(default_factory=Limits)
    refused: str = ""
    """why the command was not run at all (a NUL byte); empty when it ran"""

    @property
    def truncated(self) -> bool:
        cap = self.limits.output_bytes
        return self.stdout_bytes > cap or self.stderr_bytes > cap

    def observation(self) -> str:
        """The text a model reads back: exit code, stdout, stderr, and explicit truncation/timeout notes
        (mini-SWE-agent's ``<returncode>``/``<output>`` layout, with stderr kept apart)."""
        cap = self.limits.output_bytes
        parts = [f"<returncode>{self.returncode}</returncode>"]
        if self.refused:
            parts.append(f"[refused: {self.refused}]")
        if self.timed_out:
            parts.append(f"[timed out after {self.limits.wall_s:g} s: every process of the command was killed]")
        if self.returncode > 128 and not self.timed_out:
            try:
                sig = signal.Signals(self.returncode - 128).name
            except ValueError:
                sig = f"signal {self.returncode - 128}"
            parts.append(f"[killed by {sig}: a resource limit (CPU time, memory, file size) or a signal]")
        for name, text, n in (
            ("stdout", self.stdout, self.stdout_bytes),
            ("stderr", self.stderr, self.stderr_bytes),
        ):
            if n > cap:
                parts.append(f"[{name} truncated: {n} bytes, showing first {cap}]")
            if n:
                parts.append(f"<{name}>\n{text}</{name}>")
        return "\n".join(parts) + "\n"


def _read_all(fd: int) -> bytes:
    """What a pipe holds now, without waiting for writers that still have it open; closes ``fd``."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)


def _child_pid(info: bytes) -> int | None:
    """The namespace's pid 1 from bwrap's ``--info-fd`` JSON, if it got that far."""
    try:
        return int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def _running(pid: int | None) -> bool:
    """``pid`` exists and is not a zombie (a zombie's exit, namespace teardown included, is complete)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _system_links() -> list[str]:
    """bwrap arguments for /bin, /lib, /lib64, /sbin: the host's symlinks into /usr, or read-only binds."""
    out = []
    for link in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            out += ["--symlink", os.readlink(target), f"/{link}"]
        elif target.is_dir():
            out += ["--ro-bind", str(target), f"/{link}"]
    return out


@functools.cache
def _probe(bwrap: str, as_nobody: bool) -> str | None:
    """None if a minimal sandbox starts, else bwrap's one-line complaint (e.g. no user namespaces)."""
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_nobody else []
    argv += [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        *_system_links(),
        "/usr/bin/true",
    ]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
    return None


def sandbox_error() -> str | None:
    """Why the sandbox cannot run here (None: it can). The tests skip on this, with the reason."""
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap is not installed (apt-get install -y bubblewrap)"
    problem = _probe(bwrap, os.geteuid() == 0)
    return None if problem is None else f"bubblewrap cannot start a sandbox here: {problem}"


@functools.cache
def bwrap_features(bwrap: str) -> frozenset[str]:
    """The options of ours this bwrap knows (``--size`` and ``--disable-userns`` came in 0.8.0,
    ``--bind-fd`` too), read from its ``--help``."""
    try:
        text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(o for o in ("--size", "--disable-userns", "--bind-fd") if re.search(rf"^\s*{o}\b", text, re.M))


# -- cgroups: memory and process count summed over the whole sandbox --------------------------------------
def _cgroup_mounts() -> dict[str, tuple[str, str]]:
    """Controller -> (version, mount point) for the writable ``memory`` and ``pids`` hierarchies; a v1
    mount wins over the v2 one for a controller both offer."""
    v1: dict[str, str] = {}
    v2: str | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 6 or len(rfields) < 3 or "ro" in fields[5].split(","):
            continue
        if rfields[0] == "cgroup":
            for ctrl in ("memory", "pids"):
                if ctrl in rfields[2].split(","):
                    v1.setdefault(ctrl, fields[4])
        elif rfields[0] == "cgroup2" and v2 is None:
            v2 = fields[4]
    found = {c: ("1", m) for c, m in v1.items()}
    if v2 is not None:
        for ctrl in ("memory", "pids"):
            found.setdefault(ctrl, ("2", v2))
    return found


def _own_cgroup(version: str, ctrl: str) -> str:
    """This process's cgroup path in the hierarchy of ``ctrl`` (v1) or in the unified one (v2)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            if (version == "2" and ctrls == "") or (version == "1" and ctrl in ctrls.split(",")):
                return path
    return "/"


class _Cgroup:
    """One sandbox's cgroup(s): a child of this process's own group in the ``memory`` and ``pids``
    hierarchies, with ``limits.total_memory_bytes`` and ``limits.nproc + EXTRA_PIDS`` as caps. A process
    joins by writing its pid to every file in `procs` before it starts the sandbox. Made with what the host
    allows (`controllers` says which took); `remove` kills what is left and deletes the groups."""

    def __init__(self, limits: Limits):
        self.dirs: list[Path] = []
        self.controllers: list[str] = []
        name = f"toolssm-{os.getpid()}-{secrets.token_hex(4)}"
        for ctrl, (version, mount) in sorted(_cgroup_mounts().items()):
            own = Path(mount) / _own_cgroup(version, ctrl).lstrip("/")
            parent = own if own.is_dir() else Path(mount)
            d = parent / name
            made = False
            try:
                if not d.exists():
                    d.mkdir()
                    made = True
                if version == "2" and not (d / f"{ctrl}.max").exists():  # enable it for our children
                    (parent / "cgroup.subtree_control").write_text(f"+{ctrl}")
                if ctrl == "memory":
                    value = str(limits.total_memory_bytes)
                    if version == "1":
                        (d / "memory.limit_in_bytes").write_text(value)
                        if (d / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
                            (d / "memory.memsw.limit_in_bytes").write_text(value)
                    else:
                        (d / "memory.max").write_text(value)
                        with contextlib.suppress(OSError):
                            (d / "memory.swap.max").write_text("0")
                else:
                    (d / "pids.max").write_text(str(limits.nproc + EXTRA_PIDS + ORPHAN_ROOM))
            except OSError:  # not offered here: no group of ours without its limit
                if made:
                    with contextlib.suppress(OSError):
                        d.rmdir()
                continue
            if d not in self.dirs:
                self.dirs.append(d)
            self.controllers.append(ctrl)

    @property
    def procs(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def pids(self) -> set[int]:
        out: set[int] = set()
        for f in self.procs:
            with contextlib.suppress(OSError, ValueError):
                out.update(int(x) for x in f.read_text().split())
        return out

    def kill(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Kill every process still in the groups, then delete them (a moment's retry: an exiting
        process leaves its group only when it is reaped)."""
        deadline = time.monotonic() + 5.0
        while self.dirs:
            self.kill()
            for d in list(self.dirs):
                try:
                    d.rmdir()
                    self.dirs.remove(d)
                except FileNotFoundError:
                    self.dirs.remove(d)
                except OSError:
                    pass
            if not self.dirs or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        self.controllers = []


# -- the workspace: a size- and inode-capped tmpfs where the host lets us mount one ------------------------
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(path: Path, size: int, inodes: int, uid: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes and ``inodes`` inodes on ``path`` (owned by ``uid``). None when
    done, else why not (e.g. not root)."""
    opts = f"size={size},nr_inodes={inodes},mode=0755,uid={uid},gid={uid}".encode()
    if _libc().mount(b"tmpfs", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, opts) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def _unmount(path: Path) -> None:
    _libc().umount2(os.fsencode(path), MNT_DETACH)


@functools.cache
def _can_mount_workspace() -> str | None:
    """None if this process can mount a tmpfs workspace, else why not."""
    if os.geteuid() != 0:
        return "not root"
    d = Path(tempfile.mkdtemp(prefix="toolssm-probe-"))
    try:
        problem = _mount_tmpfs(d, 4096, 16, os.geteuid())
        if problem is None:
            _unmount(d)
        return problem
    finally:
        with contextlib.suppress(OSError):
            d.rmdir()


@functools.cache
def _cgroup_controllers() -> tuple[str, ...]:
    """The controllers of ours (memory, pids) this process can set for a sandbox: tried once."""
    cg = _Cgroup(Limits())
    found = tuple(cg.controllers)
    cg.remove()
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@functools.cache
def _sweep_stale() -> None:
    """Once per process: remove what a killed process of ours left behind (workspace mounts and cgroups
    are named after the pid that made them; a live pid's are left alone)."""
    stale = re.compile(r"toolssm-(?:shell-)?(\d+)-")
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            point = Path(left.split()[4])
            m = stale.match(point.name) if point.name.startswith("toolssm-shell-") else None
            if right.startswith("tmpfs ") and m and not _pid_alive(int(m[1])):
                _unmount(point)
                shutil.rmtree(point, ignore_errors=True)
    for version, mount in set(_cgroup_mounts().values()):
        for ctrl in ("memory", "pids"):
            own = Path(mount) / _own_cgroup(version, ctrl).lstrip("/")
            for d in [*own.glob("toolssm-*"), *Path(mount).glob("toolssm-*")]:
                m = stale.match(d.name)
                if m and d.is_dir() and not _pid_alive(int(m[1])):
                    with contextlib.suppress(OSError):
                        d.rmdir()


_warned: set[str] = set()


def limits_in_force(bwrap: str | None = None) -> tuple[list[str], list[str]]:
    """(in force, missing): the sandbox's limits as this host allows them, each as a few words."""
    bwrap = bwrap or bwrap_path()
    features = bwrap_features(bwrap) if bwrap else frozenset()
    ctrls = _cgroup_controllers()
    mount = _can_mount_workspace()
    have, miss = ["per-process rlimits (CPU, address space, processes, file size)", "wall-clock timeout"], []
    for ok, yes, no in (
        ("memory" in ctrls, "memory summed over the sandbox (cgroup)",
         "memory summed over the sandbox (no writable cgroup memory controller: per-process RLIMIT_AS only)"),
        ("pids" in ctrls, "process count of the whole sandbox (cgroup)",
         "process count of the whole sandbox (no writable cgroup pids controller: RLIMIT_NPROC only)"),
        ("--size" in features, "/dev, /dev/shm and /tmp sizes",
         "/dev, /dev/shm and /tmp sizes (bwrap has no --size: older than 0.8.0)"),
        (mount is None, "workspace size and inodes (tmpfs)",
         f"workspace size and inodes (cannot mount a tmpfs: {mount}; RLIMIT_FSIZE per file only)"),
        ("--disable-userns" in features, "no nested user namespaces",
         "no nested user namespaces (bwrap has no --disable-userns: older than 0.8.0)"),
    ):  # fmt: skip
        (have if ok else miss).append(yes if ok else no)
    return have, miss


def _warn_missing_limits(bwrap: str | None) -> None:
    """Say once, in one line, which limits are in force when one of them is missing here."""
    have, miss = limits_in_force(bwrap)
    msg = f"toolssm sandbox: not in force here: {'; '.join(miss)}. In force: {', '.join(have)}."
    if miss and msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _session_members(sid: int) -> list[int]:
    """Host pids whose session id is ``sid`` (bwrap's outer process and its pid 1 share the session that
    ``start_new_session`` made; the kernel does not reuse a pid while a session still carries it)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(st[st.rindex(")") + 2 :].split()[3]) == sid:
                out.append(int(d))
    return out


def _encode_command(command: str) -> bytes:
    """The command's bytes for bash (lone surrogates, from undecodable input, go back as bytes)."""
    try:
        return command.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return command.encode("utf-8", "surrogatepass")


#: run by bash inside the sandbox: read the command from the descriptor, close it, run the command
RUNNER = 'IFS= read -r -d "" -u {fd} __toolssm_command; exec {fd}<&-; eval "$__toolssm_command"'
#: run by sh as the caller, before anything forks: join the sandbox's cgroups (the files up to ``--``)
JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class ShellSandbox:
    """One episode's sandboxed shell over a throwaway workspace.

    >>> with ShellSandbox({"main.py": "print(1)"}) as sh:   # doctest: +SKIP
    ...     sh.run("python3 main.py").stdout
    '1\\n'
    """

    def __init__(
        self,
        files: Mapping[str, str] | None = None,
        *,
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        unsafe_no_sandbox: bool = False,
    ):
        self.limits = limits or Limits()
        self.unsafe_no_sandbox = unsafe_no_sandbox
        problem = sandbox_error()
        self._bwrap = bwrap_path() if problem is None else None
        if problem is not None and not unsafe_no_sandbox:
            raise SandboxUnavailable(f"refusing to run model-written commands without a sandbox: {problem}")
        if self._bwrap is not None:
            _warn_missing_limits(self._bwrap)
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKDIR, "LANG": "C.UTF-8", "TERM": "dumb",
            "PAGER": "cat", "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        }  # fmt: skip
        self.workspace: Path | None = None
        self.skipped: dict[str, str] = {}
        """what the last `files` call left out (relative path -> why)"""
        self._proc: subprocess.Popen | None = None
        self._cgroup: _Cgroup | None = None
        self._mounted = False
        self.reset(files or {})

    # -- episode -----------------------------------------------------------------------------------
    def reset(self, files: Mapping[str, str]) -> None:
        """A fresh throwaway workspace holding ``files`` (relative path -> text)."""
        self.close()
        lim = self.limits
        if os.geteuid() == 0:
            _sweep_stale()
        self.workspace = Path(tempfile.mkdtemp(prefix=f"toolssm-shell-{os.getpid()}-"))
        sandboxed_root = self._bwrap is not None and os.geteuid() == 0
        if sandboxed_root and _can_mount_workspace() is None:
            self._mounted = _mount_tmpfs(self.workspace, lim.workspace_bytes, lim.workspace_inodes, NOBODY) is None
        if _cgroup_controllers():
            self._cgroup = _Cgroup(lim)
        try:
            self._write(files)
        except BaseException:
            self.close()  # no mount or cgroup left behind by a half-made workspace
            raise
        if sandboxed_root:
            self._chown_tree(NOBODY)

    def _write(self, files: Mapping[str, str]) -> None:
        assert self.workspace is not None
        lim = self.limits
        for rel, text in files.items():
            p = (self.workspace / rel).resolve()
            if self.workspace.resolve() not in p.parents:
                raise ValueError(f"file {rel!r} is outside the workspace")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise ValueError(
                    f"the files do not fit in the sandbox's workspace ({lim.workspace_bytes} bytes, "
                    f"{lim.workspace_inodes} inodes; Limits.workspace_bytes/workspace_inodes)"
                ) from None

    def close(self) -> None:
        """Kill anything still running, delete the cgroup and the workspace. Safe to call twice."""
        self._kill()
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None:
            cgroup.remove()
        if self.workspace is not None:
            if self._mounted:
                _unmount(self.workspace)
                self._mounted = False
            shutil.rmtree(self.workspace, ignore_errors=True)
            self.workspace = None

    def __enter__(self) -> ShellSandbox:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten episode still cleans up
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    def files(self) -> dict[str, str]:
        """The workspace's current text files (relative path -> text); undecodable bytes are replaced.

        Reads at most ``limits.read_bytes`` in all (in path order); a file that does not fit in what is
        left is skipped and named in `skipped` with its size. Links and special files are left out."""
        assert self.workspace is not None, "the sandbox is closed"
        cap = self.limits.read_bytes
        left = cap
        out: dict[str, str] = {}
        self.skipped = {}
        for root, dirs, names in os.walk(self.workspace):  # never follows a link to a folder
            dirs.sort()
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(root, name), self.workspace)
                try:  # O_NOFOLLOW: a link is refused; O_NONBLOCK: a fifo does not block the open
                    fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                except OSError:
                    continue
                try:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    if st.st_size > left:
                        self.skipped[rel] = f"{st.st_size} bytes, over the {left} left of the {cap}-byte read cap"
                        continue
                    data = b""
                    while len(data) < st.st_size and (chunk := os.read(fd, st.st_size - len(data))):
                        data += chunk
                finally:
                    os.close(fd)
                left -= len(data)
                out[rel] = data.decode("utf-8", "replace")
        return dict(sorted(out.items()))

    # -- commands ----------------------------------------------------------------------------------
    def argv(
        self,
        command: str,
        up_fd: int | None = None,
        info_fd: int | None = None,
        cmd_fd: int | None = None,
        ws_fd: int | None = None,
    ) -> list[str]:
        """The command line that runs a command read from ``cmd_fd`` (``command`` itself is never on it).
        ``up_fd``: where the sandbox's first process reports that the sandbox is up; ``info_fd``: where bwrap
        writes its JSON info (the namespace's pid 1); ``ws_fd``: the workspace folder, opened, for
        ``--bind-fd``. Without ``cmd_fd`` the command is given to bash as an argument (for reading only:
        `run` never does that)."""
        lim = self.limits
        ulimits = [
            "prlimit", f"--cpu={lim.cpu_s}", f"--as={lim.memory_bytes}", f"--nproc={lim.nproc}",
            f"--fsize={lim.file_bytes}", "--core=0", "--",
        ]  # fmt: skip
        shell = ["bash", "-c", command] if cmd_fd is None else ["bash", "-c", RUNNER.format(fd=cmd_fd)]
        join = []
        if self._cgroup is not None and self._cgroup.procs:  # join the cgroup before anything can fork
            join = ["/bin/sh", "-c", JOIN, "join", *map(str, self._cgroup.procs), "--"]
        if self.unsafe_no_sandbox and self._bwrap is None:
            return [*join, *ulimits, *shell]
        assert self.workspace is not None
        features = bwrap_features(self._bwrap)
        size = (lambda n: ["--size", str(n)]) if "--size" in features else (lambda n: [])
        argv = [*join]
        if os.geteuid() == 0:  # root is exempt from RLIMIT_NPROC: become nobody first
            argv += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        argv += [self._bwrap, "--unshare-all"]
        if "--disable-userns" in features:
            argv += ["--unshare-user", "--disable-userns"]
        argv += [
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        argv += _system_links()
        argv += ["--proc", "/proc"]
        if "--size" in features:  # a small read-only /dev of device nodes, and a capped /dev/shm
            argv += [*size(lim.dev_bytes), "--tmpfs", "/dev"]
            for name in DEVICES:
                if Path(f"/dev/{name}").exists():
                    argv += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
            argv += ["--symlink", "/proc/self/fd", "/dev/fd"]
            for i, name in enumerate(("stdin", "stdout", "stderr")):
                argv += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
            argv += [*size(lim.shm_bytes), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
        else:  # bwrap's own /dev (unbounded tmpfs): said once in the limits warning
            argv += ["--dev", "/dev"]
        argv += [*size(lim.tmp_bytes), "--tmpfs", "/tmp"]
        if ws_fd is not None and "--bind-fd" in features:  # no host path on the command line
            argv += ["--bind-fd", str(ws_fd), WORKDIR]
        else:
            argv += ["--bind", str(self.workspace), WORKDIR]
        argv += ["--remount-ro", "/", "--chdir", WORKDIR]
        for k, v in self.env.items():
            argv += ["--setenv", k, v]
        if info_fd is not None:
            argv += ["--info-fd", str(info_fd)]
        if up_fd is not None:  # the first thing run inside the finished sandbox says so, then closes the fd
            argv += ["bash", "-c", f"printf up >&{up_fd} && exec {up_fd}>&- \"$@\"", "ready"]
        return [*argv, *ulimits, *shell]

    def run(self, command: str) -> ShellResult:
        """Run one bash command in the sandbox and wait for it (or for the wall-clock timeout).

        A command holding a NUL byte is refused (``[refused: ...]`` in the observation, exit code 2) and
        nothing runs. If bwrap fails to *set up* the sandbox (it never reported the sandbox as started, so
        the command never ran and a retry is safe) it is retried a few times: a loaded host can refuse a
        namespace for a moment. A sandbox that still will not start is reported in the observation, as
        bwrap's error."""
        if self.workspace is None:
            raise RuntimeError("the sandbox is closed; call reset() first")
        if "\0" in command:
            return ShellResult(command, "", "", 2, 0, 0, limits=self.limits, refused=NUL_REFUSAL)
        result, started = self._run_once(command)
        for attempt in range(1, SETUP_ATTEMPTS):
            if started:
                break
            time.sleep(0.1 * 2**attempt)
            if self.workspace is None:  # closed meanwhile (from another thread): nothing to retry in
                break
            result, started = self._run_once(command)
        return result

    def _run_once(self, command: str) -> tuple[ShellResult, bool]:
        """One attempt: the result, and whether the sandbox came up (always True without bwrap)."""
        lim = self.limits
        sandboxed = self._bwrap is not None
        cgroup = self._cgroup
        pipes = (os.pipe(), os.pipe()) if sandboxed else ()  # (read, write): "up", bwrap's info
        own = []  # descriptors for the child only, closed here once it has them
        try:
            cmd_fd = os.memfd_create("toolssm-command")
            own.append(cmd_fd)
            data = memoryview(_encode_command(command))
            while data:
                data = data[os.write(cmd_fd, data) :]
            os.lseek(cmd_fd, 0, os.SEEK_SET)
            ws_fd = None
            if sandboxed:
                ws_fd = os.open(self.workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # type: ignore[arg-type]
                own.append(ws_fd)
            fds = (*(w for _, w in pipes), cmd_fd, *own[1:])
            proc = subprocess.Popen(
                self.argv(command, *([w for _, w in pipes] or [None, None]), cmd_fd, ws_fd),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd="/" if sandboxed else self.workspace,  # a shell exports it as PWD: no host path for bwrap
                env=dict(self.env), start_new_session=True, pass_fds=fds,
            )  # fmt: skip
        except BaseException:
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            for fd in (*(w for _, w in pipes), *own):
                os.close(fd)
        self._proc = proc
        kept = {"stdout": bytearray(), "stderr": bytearray()}
        counts = {"stdout": 0, "stderr": 0}
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")  # type: ignore[arg-type]
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")  # type: ignore[arg-type]
        deadline = time.monotonic() + lim.wall_s
        timed_out = False
        open_streams = 2
        try:
            while open_streams:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(timeout=left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
                        continue
                    name = key.data
                    counts[name] += len(chunk)
                    room = lim.output_bytes - len(kept[name])
                    if room > 0:
                        kept[name] += chunk[:room]
            if not timed_out:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            sel.close()
            if timed_out:
                self._kill()
            proc.wait()
            up, info = (_read_all(r) for r, _ in pipes) if pipes else (b"up", b"")
            if sandboxed or cgroup is not None:
                self._reap(proc.pid, _child_pid(info), cgroup)
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
            self._proc = None
        started = bool(up)  # nothing written: the sandbox never came up, so the command never ran
        rc = proc.returncode
        if timed_out:
            rc = 124
        elif rc is not None and rc < 0:
            rc = 128 - rc  # killed by a signal, as bash reports it
        result = ShellResult(
            command, kept["stdout"].decode("utf-8", "replace"), kept["stderr"].decode("utf-8", "replace"), rc,
            counts["stdout"], counts["stderr"], timed_out, lim,
        )  # fmt: skip
        # a timeout or a kill (close() from another thread) is an outcome, not a failure to start
        return result, started or timed_out or proc.returncode < 0

    # -- internals ---------------------------------------------------------------------------------
    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:  # bwrap and its pid-1 reaper; the pid namespace takes every sandboxed process with it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self._cgroup is not None:
                self._cgroup.kill()
            proc.wait()
        self._proc = None

    @staticmethod
    def _reap(sid: int, pid1: int | None, cgroup: _Cgroup | None) -> None:
        """Wait until the sandbox is gone. bwrap's outer process can exit a moment before the namespace's
        pid 1 (``pid1``, from bwrap's info), whose exit kills and waits for every sandboxed process: a pid 1
        still running, or still exiting, means some of them may be alive. Wait until it is gone or a zombie
        (its namespace is empty by then), and kill any process still in bwrap's session (``sid``: the outer
        bwrap's pid; the command itself runs in a session of its own inside) or in the sandbox's cgroup,
        so no process of the command outlives `run`."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            pids = [p for p in {*_session_members(sid), *(cgroup.pids() if cgroup else ())} if _running(p)]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not pids and not _running(pid1):
                return
            time.sleep(0.005)

    def _chown_tree(self, uid: int) -> None:
        assert self.workspace is not None
        for root, dirs, files in os.walk(self.workspace):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)
        os.chown(self.workspace, uid, uid)


# -- the tool, token-level -----------------------------------------------------------------------------
BASH, END_BASH = "[bash]", "[/bash]"


@register_tool("shell")
class ShellTool(Tool):
    """The sandboxed shell as a protocol `Tool`, for models that write text as BPE pieces.

    One multi-token command ``[bash] <pieces of a bash command> [/bash]``; on ``[/bash]`` the pieces are
    decoded to text, run in the episode's `ShellSandbox`, and the observation text
    (`ShellResult.observation`) comes back as BPE pieces. ``[/bash]`` with no open command, or ``[bash]``
    inside one, answers ``[ERR]``, and so does a command holding a NUL byte (nothing runs). ``reset`` starts
    a fresh throwaway workspace from ``files``; ``close`` kills everything and deletes it.
    """

    tokens = (BASH, END_BASH, ERR)

    def __init__(self, bpe, files: Mapping[str, str], *, limits: Limits | None = None,
                 env: Mapping[str, str] | None = None):  # fmt: skip
        self.bpe = bpe
        self.initial = dict(files)
        self.limits = limits
        self.env = dict(env or {})
        self.sandbox: ShellSandbox | None = None
        self._cmd: list[str] | None = None
        self.n_commands = 0

    def reset(self, input_tokens: Sequence[str]) -> list[str]:
        self.close()
        self.sandbox = ShellSandbox(self.initial, limits=self.limits, env=self.env)
        self._cmd = None
        self.n_commands = 0
        return []

    def accepts(self, token: str) -> bool:
        return self._cmd is not None or token in (BASH, END_BASH)

    def step(self, command: str) -> list[str]:
        if self._cmd is None:
            if command == BASH:
                self._cmd = []
                return []
            return [ERR]
        if command == BASH:
            self._cmd = None
            return [ERR]
        if command != END_BASH:
            self._cmd.append(command)
            return []
        text, self._cmd = self.bpe.decode(self._cmd), None
        assert self.sandbox is not None, "reset() first"
        if "\0" in text:  # bash cannot take it (the model can spell it: the BPE has a piece for NUL)
            return [ERR]
        self.n_commands += 1
        return self.bpe.encode(self.sandbox.run(text).observation())

    def files(self) -> dict[str, str]:
        assert self.sandbox is not None, "reset() first"
        return self.sandbox.files()

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
