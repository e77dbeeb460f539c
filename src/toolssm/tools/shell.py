"""A sandboxed shell, in the style of mini-SWE-agent: a bash command goes in; stdout, stderr and the exit
code come out. The commands are written by a neural network, so the sandbox is a security boundary.

Each command runs in a fresh `bubblewrap <https://github.com/containers/bubblewrap>`_ sandbox over a
throwaway copy of the episode's workspace (a temporary folder, deleted by ``close()``):

- namespaces: ``--unshare-all`` (user, pid, net, ipc, uts, cgroup): no network but a private loopback, no
  view of host processes; ``--die-with-parent`` and the pid namespace kill every process of the command
  when it ends (a background process cannot outlive its command, let alone the episode);
  ``--new-session`` (no terminal injection into the caller).
- filesystem: only ``/usr`` (read-only, with the ``/bin``, ``/lib``, ``/lib64`` links), a private
  ``/proc`` and ``/dev``, a size-capped tmpfs ``/tmp``, and the workspace copy read-write at ``/work``.
  No ``/etc``, no home, nothing of the project.
- identity: ``--clearenv`` with a fixed small environment; run as root, the host user is dropped to
  ``nobody`` (uid 65534) before bwrap starts, because the kernel does not enforce RLIMIT_NPROC for root.
- limits (``prlimit`` inside the sandbox, inherited by every child): CPU seconds, address space, process
  count, file size; a wall-clock timeout kills the whole sandbox; stdout and stderr are read with a byte
  cap, and truncation is stated in the observation, e.g. ``[stdout truncated: 104857600 bytes, showing
  first 10000]``.
- start-up: the first process inside the finished sandbox writes to a pipe before it runs the command. If
  nothing arrives, the sandbox never came up (a loaded host can refuse a namespace for a moment), the
  command never ran, and the attempt is retried (``SETUP_ATTEMPTS``) before bwrap's error is reported.
- teardown: ``run`` returns only once the namespace's pid 1 (named by bwrap's ``--info-fd``) has finished
  exiting, which the kernel completes only after every process in the namespace is gone. bwrap's outer
  process can exit a moment earlier.

If ``bwrap`` is missing the tool refuses to run (`SandboxUnavailable`, one line). It never falls back to
an unsandboxed shell on its own; ``unsafe_no_sandbox=True`` (documented in docs/tasks/codefix.md, for
trusted commands only, e.g. replaying one's own expert) runs bash directly with the same limits and
timeout but without isolation.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolssm.tools.base import ERR, Tool, register_tool

#: where the workspace copy appears inside the sandbox
WORKDIR = "/work"
NOBODY = 65534
SETUP_ATTEMPTS = 3  # tries to bring a sandbox up before its error becomes the observation


class SandboxUnavailable(RuntimeError):
    """bubblewrap is not installed (or cannot start); the shell tool refuses to run without it."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one command. Defaults fit tiny Python programs."""

    wall_s: float = 10.0
    """wall-clock timeout; the whole sandbox is killed when it runs out"""
    cpu_s: int = 5
    """RLIMIT_CPU per process"""
    memory_bytes: int = 512 * 2**20
    """RLIMIT_AS per process (address space)"""
    nproc: int = 32
    """RLIMIT_NPROC: processes of the sandbox user"""
    file_bytes: int = 8 * 2**20
    """RLIMIT_FSIZE: the largest file a command may write"""
    output_bytes: int = 10_000
    """bytes of stdout (and of stderr) kept; the rest is counted and dropped"""
    tmp_bytes: int = 64 * 2**20
    """size of the sandbox's private /tmp"""


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

    @property
    def truncated(self) -> bool:
        cap = self.limits.output_bytes
        return self.stdout_bytes > cap or self.stderr_bytes > cap

    def observation(self) -> str:
        """The text a model reads back: exit code, stdout, stderr, and explicit truncation/timeout notes
        (mini-SWE-agent's ``<returncode>``/``<output>`` layout, with stderr kept apart)."""
        cap = self.limits.output_bytes
        parts = [f"<returncode>{self.returncode}</returncode>"]
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


class ShellSandbox:
    """One episode's sandboxed shell over a throwaway copy of a codebase.

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
        self.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKDIR, "LANG": "C.UTF-8", "TERM": "dumb",
            "PAGER": "cat", "PYTHONDONTWRITEBYTECODE": "1",
            **(env or {}),
        }  # fmt: skip
        self.workspace: Path | None = None
        self._proc: subprocess.Popen | None = None
        self.reset(files or {})

    # -- episode -----------------------------------------------------------------------------------
    def reset(self, files: Mapping[str, str]) -> None:
        """A fresh throwaway workspace holding ``files`` (relative path -> text)."""
        self.close()
        self.workspace = Path(tempfile.mkdtemp(prefix="toolssm-shell-"))
        for rel, text in files.items():
            p = (self.workspace / rel).resolve()
            if self.workspace.resolve() not in p.parents:
                raise ValueError(f"file {rel!r} is outside the workspace")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        if self._bwrap is not None and os.geteuid() == 0:
            self._chown_tree(NOBODY)

    def close(self) -> None:
        """Kill anything still running and delete the workspace. Safe to call twice."""
        self._kill()
        if self.workspace is not None:
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
        """The workspace's current text files (relative path -> text); undecodable bytes are replaced."""
        assert self.workspace is not None, "the sandbox is closed"
        out = {}
        for p in sorted(self.workspace.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(self.workspace))] = p.read_bytes().decode("utf-8", "replace")
        return out

    # -- commands ----------------------------------------------------------------------------------
    def argv(self, command: str, up_fd: int | None = None, info_fd: int | None = None) -> list[str]:
        """The command line that runs ``command``. ``up_fd``: where the sandbox's first process reports that
        the sandbox is up; ``info_fd``: where bwrap writes its JSON info (the namespace's pid 1)."""
        lim = self.limits
        ulimits = [
            "prlimit", f"--cpu={lim.cpu_s}", f"--as={lim.memory_bytes}", f"--nproc={lim.nproc}",
            f"--fsize={lim.file_bytes}", "--core=0", "--",
        ]  # fmt: skip
        shell = ["bash", "-c", command]
        if self.unsafe_no_sandbox and self._bwrap is None:
            return [*ulimits, *shell]
        assert self.workspace is not None
        argv = []
        if os.geteuid() == 0:  # root is exempt from RLIMIT_NPROC: become nobody first
            argv += [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
            ]
        argv += [
            self._bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        argv += _system_links()
        argv += [
            "--proc", "/proc", "--dev", "/dev", "--size", str(lim.tmp_bytes), "--tmpfs", "/tmp",
            "--bind", str(self.workspace), WORKDIR, "--remount-ro", "/", "--chdir", WORKDIR,
        ]  # fmt: skip
        for k, v in self.env.items():
            argv += ["--setenv", k, v]
        if info_fd is not None:
            argv += ["--info-fd", str(info_fd)]
        if up_fd is not None:  # the first thing run inside the finished sandbox says so, then closes the fd
            argv += ["bash", "-c", f"printf up >&{up_fd} && exec {up_fd}>&- \"$@\"", "ready"]
        return [*argv, *ulimits, *shell]

    def run(self, command: str) -> ShellResult:
        """Run one bash command in the sandbox and wait for it (or for the wall-clock timeout).

        If bwrap fails to *set up* the sandbox (it never reported the sandbox as started, so the command
        never ran and a retry is safe) it is retried a few times: a loaded host can refuse a namespace for a
        moment. A sandbox that still will not start is reported in the observation, as bwrap's error."""
        if self.workspace is None:
            raise RuntimeError("the sandbox is closed; call reset() first")
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
        env = None if sandboxed else dict(self.env)
        pipes = (os.pipe(), os.pipe()) if sandboxed else ()  # (read, write): "up", bwrap's info
        ws_key = os.fsencode(str(self.workspace))
        try:
            proc = subprocess.Popen(
                self.argv(command, *(w for _, w in pipes)), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=self.workspace, env=env, start_new_session=True,
                pass_fds=tuple(w for _, w in pipes),
            )  # fmt: skip
        except BaseException:
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            for _, w in pipes:
                os.close(w)
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
            if sandboxed:
                self._reap(ws_key, _child_pid(info))
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
            proc.wait()
        self._proc = None

    @staticmethod
    def _reap(key: bytes, pid1: int | None) -> None:
        """Wait until the sandbox is gone. bwrap's outer process can exit a moment before the namespace's
        pid 1 (``pid1``, from bwrap's info), whose exit kills and waits for every sandboxed process: a pid 1
        still running, or still exiting, means some of them may be alive. Wait until it is gone or a zombie
        (its namespace is empty by then), and kill any bwrap process still naming the workspace (``key``)
        in its command line, so no process of the command outlives `run`."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            pids = []
            for d in os.listdir("/proc"):
                try:
                    if d.isdigit() and key in Path(f"/proc/{d}/cmdline").read_bytes():
                        pids.append(int(d))
                except OSError:  # gone meanwhile
                    pass
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
    inside one, answers ``[ERR]``. ``reset`` starts a fresh throwaway workspace from ``files``;
    ``close`` kills everything and deletes it.
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
        self.n_commands += 1
        return self.bpe.encode(self.sandbox.run(text).observation())

    def files(self) -> dict[str, str]:
        assert self.sandbox is not None, "reset() first"
        return self.sandbox.files()

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
