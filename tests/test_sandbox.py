"""The `python` tool's sandbox: useful code runs; escapes end as tool errors within the limits, host untouched."""

import os
import socket
import time

import pytest

from kdagent.plugins import build_plugins
from kdagent.tools import sandbox
from kdagent.tools.sandbox import python, run_python


def contained(code, bound_s=5.0, **limits):
    """Run hostile code: it must end as a recorded tool error, well within `bound_s`."""
    result = run_python(code, **limits)
    assert not result.ok and result.error.startswith("error: "), result
    assert result.seconds < bound_s, result
    return result


def sandbox_processes(grace_s=2.0):
    """Processes on this machine that belong to a sandbox run (their command line names its folder), once
    those SIGKILLed have had `grace_s` to finish exiting."""
    deadline = time.monotonic() + grace_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"kdagent-sandbox-" in f.read():
                        found.append(pid)
            except OSError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# --- what it is for ----------------------------------------------------------------------------------


def test_print_returns_output():
    assert python("print(2+3)") == "5"
    assert python("x = 1") == "(no output)"
    assert python("1/0").startswith("error: ZeroDivisionError: division by zero (line 1)")
    assert (
        python("print('partial')\nraise ValueError('bad')")
        == "error: ValueError: bad (line 2)\noutput before the error:\npartial"
    )


def test_files_inside_the_working_folder_work_and_the_folder_is_deleted():
    code = (
        "import os, pathlib, tempfile\n"
        "open('notes.txt', 'w').write('hello')\n"
        "os.mkdir('sub'); pathlib.Path('sub/x.txt').write_text('there')\n"
        "print(open('notes.txt').read(), pathlib.Path('sub/x.txt').read_text(), sorted(os.listdir('.')))\n"
        "with tempfile.NamedTemporaryFile() as f: pass\n"
        "print(os.getcwd())\n"
    )
    result = run_python(code)
    assert result.ok, result
    first, folder = result.output.splitlines()
    assert first == "hello there ['notes.txt', 'sub']"
    assert "kdagent-sandbox-" in folder and not os.path.exists(folder)


def test_output_is_capped():
    result = run_python("print('x' * 10**6)", max_output_chars=100)
    assert result.ok and len(result.output) < 200 and "truncated" in result.output
    flood = contained("while True: print('y' * 10000)", max_output_chars=100)  # the file size limit stops it
    assert len(flood.output) < 200


def test_the_tool_is_registered():
    tool = build_plugins(load_entry_points=False).tools["python"].obj
    assert tool is python and "sandbox" in tool.__doc__


# --- containment ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        "os.system('touch {marker}')",
        "os.popen('touch {marker}').read()",
        "os.posix_spawn('/usr/bin/touch', ['touch', '{marker}'], {{}})",
        "os.execv('/usr/bin/touch', ['touch', '{marker}'])",
        "__import__('subprocess').run(['touch', '{marker}'])",
        "__import__('pty').spawn(['touch', '{marker}'])",
    ],
)
def test_processes_are_contained(tmp_path, call):
    marker = tmp_path / "marker"
    result = contained("import os\n" + call.format(marker=marker))
    assert "PermissionError" in result.error and not marker.exists()


@pytest.mark.parametrize("prelude", ["", "import subprocess  # to have Popen among the subclasses\n"])
def test_subclass_walk_to_popen_is_contained(tmp_path, prelude):
    marker = tmp_path / "marker"
    code = (
        prelude
        + f"""
classes, seen = list(().__class__.__base__.__subclasses__()), set()
while classes:
    cls = classes.pop()
    if cls not in seen:
        seen.add(cls)
        classes.extend(cls.__subclasses__() if cls is not type else [])
popen = [c for c in seen if c.__name__ == "Popen"]
print(f"walked {{len(seen)}} classes, Popen {{'found' if popen else 'not loaded'}}", flush=True)
if popen:
    popen[0](["touch", {str(marker)!r}]).wait()
wrap_close = [c for c in seen if c.__name__ == "_wrap_close"][0]  # then os.system through os's globals
wrap_close.__init__.__globals__["system"]("touch {marker}")
"""
    )
    result = contained(code)
    assert not marker.exists()
    if prelude:  # subprocess cannot be loaded: its _posixsubprocess forks and execs outside any audit event
        assert result.error == "error: PermissionError: import _posixsubprocess is not allowed in the sandbox"
    else:
        assert "Popen not loaded" in result.output
        assert result.error == "error: PermissionError: os.system is not allowed in the sandbox"


def test_ctypes_is_contained(tmp_path):
    marker = tmp_path / "marker"
    result = contained(f"import ctypes\nctypes.CDLL(None).system(b'touch {marker}')")
    assert "import ctypes" in result.error and not marker.exists()
    assert "import _ctypes" in contained("import _ctypes\n_ctypes.dlopen(None)").error


@pytest.mark.parametrize(
    "code",
    [
        "print(open('/etc/passwd').read())",
        "import pathlib; print(pathlib.Path('/etc/passwd').read_text())",
        "import os; print(os.read(os.open('/etc/passwd', os.O_RDONLY), 4096))",
        "print(open('../../../etc/passwd').read())",
        "print(open(b'/etc/passwd').read())",
        "import os; print(os.listdir('/etc'))",
        # a str that lies about itself, and a monkeypatched os and builtins, do not fool the policy
        "class S(str):\n    def startswith(self, *a): return True\n    def split(self, *a): return ['tmp']\n"
        "print(open(S('/etc/passwd')).read())",
        "import os, builtins; os.fspath = lambda p: '.'; builtins.type = lambda x: int\nprint(open('/etc/passwd').read())",
    ],
)
def test_reading_outside_is_contained(code):
    result = contained(code)
    assert "PermissionError" in result.error and "root:" not in result.output


@pytest.mark.parametrize(
    "code",
    [
        "open('{target}', 'w').write('owned')",
        "import pathlib; pathlib.Path('{target}').write_text('owned')",
        "import os; os.close(os.open('{target}', os.O_CREAT | os.O_WRONLY))",
        "import os; os.rename('{keep}', '{target}')",
        "import os; os.remove('{keep}')",
        "import shutil; shutil.rmtree('{folder}')",
        "import os; os.symlink('{folder}', 'link'); open('link/owned', 'w')",
        "import os; os.chdir('{folder}'); open('owned', 'w')",
        "import sqlite3; sqlite3.connect('{target}').execute('create table t(x)')",
    ],
)
def test_writing_outside_is_contained(tmp_path, code):
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    target = tmp_path / "owned"
    contained(code.format(target=target, keep=keep, folder=tmp_path))
    assert keep.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    "code",
    [
        "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)",
        "import socket; socket.getaddrinfo('localhost', {port})",
    ],
)
def test_network_is_contained(code):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        result = contained(code.format(port=listener.getsockname()[1]))
        assert "socket." in result.error
        listener.settimeout(0.2)
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing ever connected


@pytest.mark.parametrize(
    "code",
    [
        "import os\nwhile True:\n    os.fork()",
        "import os\nwhile True:\n    os.forkpty()",
        "import multiprocessing\nwhile True:\n    multiprocessing.Process(target=print).start()",
    ],
)
def test_fork_bomb_is_contained(code):
    result = contained(code)
    assert "not allowed" in result.error
    assert sandbox_processes() == []


@pytest.mark.parametrize(
    "code", ["b'x' * 10**10", "bytearray(10**10)", "a = []\nwhile True:\n    a.append(bytes(10**7))"]
)
def test_memory_bomb_is_contained(code):
    assert "MemoryError" in contained(code).error


def test_cpu_loop_is_contained():
    assert contained("while True: pass", cpu_s=1).error == "error: CPU time limit exceeded (1 s)"
    ignoring = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"
    assert "CPU time limit" in contained(ignoring, cpu_s=1).error


def test_wall_clock_kill_takes_the_whole_run():
    code = "import os, time\nprint(os.getcwd(), flush=True)\ntime.sleep(60)"
    result = contained(code, bound_s=3, wall_s=1)
    assert result.error == "error: killed (wall-clock limit 1 s)"
    assert not os.path.exists(result.output.strip())  # the folder is gone
    assert sandbox_processes() == []  # and so is every process of the run


def test_audit_hooks_and_finalizers_cannot_be_used_to_escape(tmp_path):
    marker = tmp_path / "marker"
    contained("import sys\nsys.addaudithook(lambda *a: None)")
    contained("import gc\ngc.get_objects()")
    # code at interpreter shutdown would run after the audit hooks are cleared: there is no shutdown
    atexit = f"import atexit, os\natexit.register(os.system, 'touch {marker}')"
    assert run_python(atexit).ok and not marker.exists()


def test_kernel_layers_when_available():
    plan, layers = sandbox.kernel_isolation()
    if plan is None:
        pytest.skip(f"no kernel isolation here ({layers}): the python tool refuses, see test_sandbox_escapes.py")
    assert python("import socket; print(socket.if_nameindex())") == "[(1, 'lo')]"  # a network namespace of its own
    assert python("import os; print(os.getpid())") == "2"  # a PID namespace: its supervisor is 1
    limits = python(
        "import resource as r\nprint([r.getrlimit(getattr(r, n)) for n in ('RLIMIT_CPU', 'RLIMIT_NPROC', 'RLIMIT_CORE')])"
    )
    assert limits == f"[(5, 5), ({sandbox.MAX_PROCESSES}, {sandbox.MAX_PROCESSES}), (0, 0)]"
    assert "namespaces(mount,pid,net,ipc,uts" in layers and "no_new_privs" in layers
    assert run_python("print(1)").isolation == layers
    if os.geteuid() == 0:
        assert plan.uid == sandbox.NOBODY and python("import os; print(os.getuid(), os.getgid())") == "65534 65534"


def test_environment_holds_no_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert "sk-secret" not in python("import os; print(dict(os.environ))")
    assert python("import sys; print(sys.flags.isolated, sys.flags.no_site)") == "1 1"


def describe(plan):
    return (
        f"{'kernel' if plan.kernel else 'weak'}-{os.path.basename(plan.python)}-{'nobody' if plan.uid else 'same-uid'}"
    )


@pytest.mark.parametrize(
    "plan", [p for p in [sandbox.kernel_isolation()[0]] if p] + sandbox._weak_plans(), ids=describe
)
def test_every_way_to_launch_contains(tmp_path, plan):
    """The weak ways (no kernel isolation, an interpreter nobody may not run): fewer layers, the policy still holds."""
    if sandbox._execute(plan, "print(2+3)", 10, 5, 512, 100).output != "5\n":
        pytest.skip(f"{describe(plan)} does not start here")
    marker = tmp_path / "marker"
    for code in [
        f"import os; os.system('touch {marker}')",
        "print(open('/etc/passwd').read())",
        f"open('{marker}', 'w')",
        "import socket; socket.socket()",
        "import ctypes",
        "import os\nwhile True: os.fork()",
    ]:
        result = sandbox._execute(plan, code, 10, 5, 512, 100)
        assert result.error.startswith("error: PermissionError") and "root:" not in result.output
    assert "MemoryError" in sandbox._execute(plan, "b'x' * 10**10", 10, 5, 512, 100).error
    assert not marker.exists() and sandbox_processes() == []
