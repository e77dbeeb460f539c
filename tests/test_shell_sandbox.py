"""Sandbox escape attempts against the shell tool. Each must fail with a clear observation and leave the
host unaffected. Skipped (with the reason) only where bubblewrap cannot run at all."""

import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from toolssm.tools import shell
from toolssm.tools.shell import Limits, SandboxUnavailable, ShellSandbox

REASON = shell.sandbox_error()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"no sandbox: {REASON}")
FAST = Limits(wall_s=30, cpu_s=1)  # a generous wall clock: the machine may be loaded


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


@pytest.fixture
def sandbox():
    sh = ShellSandbox({"main.py": "print('hello')\n"}, limits=FAST)
    yield sh
    sh.close()


@needs_bwrap
def test_a_command_runs_with_stdout_stderr_and_exit_code(sandbox):
    r = sandbox.run("python3 main.py; echo oops >&2; exit 3")
    assert (r.stdout, r.stderr, r.returncode) == ("hello\n", "oops\n", 3)
    assert r.observation() == "<returncode>3</returncode>\n<stdout>\nhello\n</stdout>\n<stderr>\noops\n</stderr>\n"
    sandbox.run("echo 'print(2)' > main.py")  # the workspace persists across the episode's commands
    assert sandbox.run("python3 main.py").stdout == "2\n"
    assert sandbox.files() == {"main.py": "print(2)\n"}


@needs_bwrap
@pytest.mark.parametrize("target", ["project", "test"])
def test_reading_a_host_file_outside_the_workspace_fails(sandbox, target):
    path = Path(shell.__file__).resolve() if target == "project" else Path(__file__).resolve()
    assert path.is_file()
    r = sandbox.run(f"cat {path}; cat /etc/passwd; ls {path.parent}")
    assert r.returncode != 0
    assert "No such file or directory" in r.stderr
    assert "import" not in r.stdout and "root:" not in r.stdout


@needs_bwrap
def test_writing_outside_the_workspace_fails_and_the_host_is_unaffected(sandbox, tmp_path):
    victim = tmp_path / "pwned"
    here = Path(__file__).resolve().parent / f"pwned-{uuid.uuid4().hex}"
    r = sandbox.run(f"echo x > /usr/pwned; echo x > /pwned; echo x > ../pwned; echo x > {victim}; echo x > {here}")
    assert "Read-only file system" in r.stderr
    assert not victim.exists() and not here.exists() and not Path("/pwned").exists()
    assert not Path(sandbox.workspace).parent.joinpath("pwned").exists()


@needs_bwrap
def test_no_network_not_even_the_host_loopback(sandbox):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(3)
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(_try_accept(server)))
    t.start()
    code = (
        "import socket\n"
        "for host in ('127.0.0.1', '1.1.1.1'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port} if host == '127.0.0.1' else 80), timeout=2)\n"
        "        print('connected', host)\n"
        "    except OSError as e:\n"
        "        print('blocked', host, e.strerror)\n"
    )
    sandbox.run(f"cat > net.py <<'EOF'\n{code}EOF")
    r = sandbox.run("python3 net.py")
    t.join()
    server.close()
    assert "connected" not in r.stdout
    assert "blocked 127.0.0.1 Connection refused" in r.stdout
    assert "blocked 1.1.1.1 Network is unreachable" in r.stdout
    assert accepted == [False]


def _try_accept(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
        conn.close()
        return True
    except OSError:
        return False


@needs_bwrap
def test_a_fork_bomb_hits_the_process_limit_and_leaves_nothing_behind(sandbox):
    marker = f"bomb{uuid.uuid4().hex[:8]}"
    r = sandbox.run(f"{marker}(){{ {marker} | {marker} & }}; {marker}; sleep 1; echo still here")
    assert "fork" in r.stderr and "Resource temporarily unavailable" in r.stderr
    assert host_processes_with(marker) == []


@needs_bwrap
def test_an_infinite_loop_is_killed_by_the_cpu_limit(sandbox):
    r = sandbox.run("while :; do :; done")
    if r.timed_out:  # a starved machine can take longer than the wall clock to spend 1 CPU second
        assert r.returncode == 124 and "[timed out after" in r.observation()
    else:
        assert r.returncode == 137 and "[killed by SIGKILL" in r.observation()


@needs_bwrap
def test_a_sleeping_command_is_killed_by_the_wall_clock_timeout():
    with ShellSandbox({}, limits=Limits(wall_s=1)) as sh:
        r = sh.run("sleep 30; echo survived")
    assert "survived" not in r.stdout  # killed during the sleep, not waited out
    assert r.timed_out and r.returncode == 124
    assert "[timed out after 1 s: every process of the command was killed]" in r.observation()


@needs_bwrap
def test_allocating_10_gb_fails(sandbox):
    r = sandbox.run("python3 -c 'x = bytearray(10 * 2**30)'")
    assert r.returncode == 1 and "MemoryError" in r.stderr


@needs_bwrap
def test_printing_100_mb_is_truncated_explicitly(sandbox):
    r = sandbox.run("head -c 104857600 /dev/zero | tr '\\0' a")
    assert r.stdout_bytes == 104857600 and r.truncated
    assert r.stdout == "a" * FAST.output_bytes
    assert f"[stdout truncated: 104857600 bytes, showing first {FAST.output_bytes}]" in r.observation()


@needs_bwrap
def test_writing_a_huge_file_hits_the_file_size_limit(sandbox):
    r = sandbox.run("head -c 100000000 /dev/zero > big")
    assert "File size limit exceeded" in r.stderr or r.returncode != 0
    assert (Path(sandbox.workspace) / "big").stat().st_size <= FAST.file_bytes


@needs_bwrap
def test_no_background_process_survives_its_command_or_the_episode():
    marker = f"{uuid.uuid4().int % 10**6}.5"
    sh = ShellSandbox({}, limits=FAST)
    r = sh.run(
        f"sleep {marker} & setsid sleep {marker} & nohup sleep {marker} >/dev/null 2>&1 &"
        " (sleep 1; echo late > late.txt) & echo started"
    )
    assert r.stdout == "started\n"
    assert host_processes_with(marker) == []
    time.sleep(1.5)
    assert "late.txt" not in sh.files()
    workspace = Path(sh.workspace)
    sh.close()
    assert host_processes_with(marker) == [] and not workspace.exists()


@needs_bwrap
def test_close_kills_a_command_still_running_in_another_thread():
    marker = f"{uuid.uuid4().int % 10**6}.25"
    sh = ShellSandbox({}, limits=Limits(wall_s=120, cpu_s=60))
    results = []
    t = threading.Thread(target=lambda: results.append(sh.run(f"sleep {marker}")))
    t.start()
    deadline = time.monotonic() + 60  # generous: a loaded CI box can be slow to start bwrap
    while not host_processes_with(marker) and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    # if the command ended by itself, say how (bwrap's own error, say) instead of failing blind
    assert t.is_alive(), f"the command ended before close(): {results[0].observation() if results else '?'}"
    assert host_processes_with(marker)
    sh.close()
    t.join(timeout=5)
    assert not t.is_alive() and host_processes_with(marker) == []


def test_without_bubblewrap_the_tool_refuses_and_never_falls_back(monkeypatch):
    monkeypatch.setattr(shell, "bwrap_path", lambda: None)
    with pytest.raises(
        SandboxUnavailable,
        match="refusing to run model-written commands without a sandbox",
    ):
        ShellSandbox({"main.py": "print(1)\n"})


def test_the_documented_opt_in_runs_unsandboxed_for_trusted_commands(monkeypatch):
    monkeypatch.setattr(shell, "bwrap_path", lambda: None)
    with ShellSandbox({"main.py": "print(1)\n"}, unsafe_no_sandbox=True) as sh:
        r = sh.run("python3 main.py")
    assert r.stdout == "1\n" and r.returncode == 0


@needs_bwrap
def test_a_sandbox_that_fails_to_start_is_retried_then_reported(monkeypatch):
    sh = ShellSandbox({}, limits=FAST)
    real = sh.argv
    calls = []

    def broken(command, *fds):  # a bind of a missing path: bwrap fails before the command runs
        calls.append(command)
        argv = real(command, *fds)
        i = argv.index("--unshare-all")
        return [*argv[:i], "--ro-bind", "/no/such/path", "/x", *argv[i:]]

    monkeypatch.setattr(sh, "argv", broken)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    r = sh.run("echo ran >> count.txt")
    assert len(calls) == shell.SETUP_ATTEMPTS
    assert r.returncode != 0 and "bwrap" in r.stderr and "count.txt" not in sh.files()
    sh.close()


@needs_bwrap
def test_a_command_that_fails_like_bwrap_runs_once(sandbox):
    r = sandbox.run("echo ran >> count.txt; echo 'bwrap: fake' >&2; exit 1")
    assert r.returncode == 1 and sandbox.files()["count.txt"] == "ran\n"


@needs_bwrap
def test_the_command_inherits_only_stdin_stdout_stderr(sandbox):
    assert sandbox.run("ls /proc/$$/fd; true").stdout.split() == ["0", "1", "2"]  # bash itself, not ls
