"""Escapes from the `python` tool's sandbox, tried as an attacker would (issue 24), and kills mid-call.

Each attack runs in a real "kdagent" process (a small runner importing kdagent.tools.sandbox, its
environment holding a canary API key) as root and as an ordinary user (uid 65534 with the system's
interpreter of the same version, when the test runs as root; else the test's own user), each in three
settings: every layer; the audit hook switched off (as if code had reached native execution: what holds
then is the kernel alone); and the weak mode a recipe must opt into where namespaces are missing. Host
files that the attacks aim at are made readable and writable by anyone, so only the sandbox stands in the
way. Afterwards nothing on the host has changed: no canary in any output, the private key and the round's
`sft.jsonl` untouched, no marker file, no shared-memory object, no sandbox process, no scratch folder, the
runner alive.
"""

import inspect
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from kdagent.tools import sandbox

REPO = str(Path(__file__).resolve().parents[2])
KEY_CANARY = "PRIVATE-KEY-CANARY-7f3a"
API_CANARY = "sk-escape-canary-91b2"
SYSTEM_PYTHON = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/bin:/usr/local/bin:/bin")

RACE = """
class P:
    n = 0
    def __fspath__(self):
        P.n += 1
        return 'ok.txt' if P.n % 2 else {target!r}
"""
ATTACKS = {
    # path arguments the audit hook cannot read as a plain string
    "bytes path": "print(open(b'{key}').read())",
    "bytearray path": "import os; print(os.read(os.open(bytearray(b'{key}'), os.O_RDONLY), 999))",
    "memoryview listdir": "import os; print(os.listdir(memoryview(b'{home}/.ssh')))",
    "racing fspath read": RACE.format(target="{key}")
    + "import _io; open('ok.txt', 'w').close()\nfor _ in range(2):\n    print(_io.open(P()).read())",
    "racing fspath os.open": RACE.format(target="{key}")
    + "import os; open('ok.txt', 'w').close()\nfor _ in range(2):\n    print(os.read(os.open(P(), os.O_RDONLY), 999))",
    "racing fspath append": RACE.format(target="{sft}")
    + "import _io\nfor _ in range(2):\n    _io.open(P(), 'a').write('{{\"evil\": 1}}\\n')",
    "racing pathlib": "import pathlib\nclass Q(pathlib.PosixPath):\n    n = 0\n    def __fspath__(self):\n        Q.n += 1\n"
    "        return 'ok.txt' if Q.n % 2 else '{key}'\nopen('ok.txt', 'w').close(); print(Q('ok.txt').read_text())\n"
    "print(open(Q('ok.txt')).read())",
    # file access through SQL, shared memory that outlives the run
    "sqlite attach": "import sqlite3; c = sqlite3.connect(':memory:'); c.execute(\"ATTACH DATABASE '{rundir}/evil.db' AS e\"); "
    "c.execute('CREATE TABLE e.t(x)'); c.commit()",
    "sqlite vacuum into": "import sqlite3; c = sqlite3.connect(':memory:'); c.execute('CREATE TABLE t(x)'); c.execute(\"VACUUM INTO '{rundir}/copy.db'\")",
    "posix shm": "from multiprocessing import shared_memory\nm = shared_memory.SharedMemory(name='{shm}', create=True, size=4096)\nm.buf[:2] = b'hi'",
    "_posixshmem": "import _posixshmem; _posixshmem.shm_open('/{shm}', 0o102, 0o600)",
    # files, environment and /proc
    "private key": "print(open('{key}').read())",
    "proc environ": "print(open('/proc/KDAGENT_PID/environ', 'rb').read())",
    "proc environ walk": "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        print(open(f'/proc/{{p}}/environ', 'rb').read())",
    "append to sft.jsonl": "open('{sft}', 'a').write('{{\"evil\": 1}}\\n')",
    "new file in the run": "open('{rundir}/evil.jsonl', 'w').write('x')",
    # network, processes, native code, introspection, bytecode, signals
    "tcp connect": "import socket; socket.create_connection(('127.0.0.1', PORT), timeout=1).sendall(b'hi')",
    "os.system": "import os; os.system('touch {marker}')",
    "exec": "import os; os.execv('/bin/sh', ['sh', '-c', 'touch {marker}'])",
    "ctypes": "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.system(b'touch {marker}')\n"
    "fd = libc.open(b'{sft}', 1025)\nlibc.write(fd, b'evil', 4)\nprint(ctypes.string_at(libc.getenv(b'OPENAI_API_KEY')))",
    "subclasses walk": "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
    ".__init__.__globals__['system']('touch {marker}')",
    "marshal bytecode": "import marshal\nc = compile('a = 1\\nb = 2', '<x>', 'exec')\ndata = bytearray(marshal.dumps(c))\n"
    "ops = bytearray(c.co_code)\nstart = data.find(bytes(ops))\nfor k in range(0, len(ops), 2):\n"
    "    if ops[k] == 100:\n        ops[k + 1] = 250\ndata[start:start + len(ops)] = ops\n"
    "exec(marshal.loads(bytes(data)))\nprint(open('{key}').read())",
    "signal kdagent": "import os; os.kill(KDAGENT_PID, 9)",
    "signal everyone": "import os, signal; os.kill(-1, signal.SIGKILL)",
    # resource exhaustion
    "memory": "b'x' * 10**10",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "disk": "for i in range(100):\n    open(f'f{{i}}', 'wb').write(b'x' * 2**20)",
    "cpu": "while True:\n    pass",
}


def run_attacks(repo, mode, codes, port):
    """The runner (a kdagent process): run each attack, return {name: [ok, output, error, isolation]}."""
    import inspect
    import os
    import sys

    sys.path.insert(0, repo)
    from kdagent.tools import sandbox, sandbox_child

    if mode.startswith("weak"):
        os.environ["KDAGENT_SANDBOX_NO_KERNEL"] = "1"
    if mode.endswith("no hook"):  # as if the code had reached native execution past the audit hook
        source = "def install_policy(root, report_fd):\n    pass\n\n" + inspect.getsource(sandbox_child.main)
        sandbox._source = lambda: source
    results = {}
    for name, code in codes.items():
        code = code.replace("KDAGENT_PID", str(os.getpid())).replace("PORT", str(port))
        r = sandbox.run_python(
            code, wall_s=5, cpu_s=1, memory_mb=256, max_output_chars=3000, allow_unisolated=mode.startswith("weak")
        )
        results[name] = [r.ok, r.output, r.error, r.isolation]
    return results


@pytest.fixture(scope="module")
def host():
    """Targets on the host, open to anyone: a private key in a HOME, a run directory with a round's sft.jsonl."""
    base = Path(tempfile.mkdtemp(prefix="kdagent-escape-test-"))
    (base / "home" / ".ssh").mkdir(parents=True)
    (base / "run" / "round-01").mkdir(parents=True)
    key, sft = base / "home" / ".ssh" / "id_rsa", base / "run" / "round-01" / "sft.jsonl"
    key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_CANARY}\n")
    sft.write_text('{"messages": []}\n')
    for path in [base, *base.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    yield {
        "base": base,
        "home": base / "home",
        "key": key,
        "sft": sft,
        "rundir": sft.parent,
        "marker": base / "marker",
        "shm": f"kdagent_escape_{secrets.token_hex(4)}",
    }
    shutil.rmtree(base, ignore_errors=True)


def sandbox_pids(token):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def as_user(uid):
    """The command prefix that runs as `uid` (and its gid, no other groups) where this test runs as root; run as
    an ordinary user, the test is that user (no prefix), and root's settings cannot run (None)."""
    if os.geteuid() != 0:
        return None if uid == 0 else []
    return (
        [] if uid == 0 else [shutil.which("setpriv"), "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--"]
    )


def start_runner(user, mode, codes, port, home, extra_env=None):
    python = sys.executable if user == 0 or os.geteuid() != 0 else SYSTEM_PYTHON
    program = (
        inspect.getsource(run_attacks)
        + "\nimport json, sys\nprint(json.dumps(run_attacks(*json.loads(sys.argv[1]))))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "OPENAI_API_KEY": API_CANARY,
        "LANG": "C.UTF-8",
        **(extra_env or {}),
    }
    return subprocess.Popen(
        as_user(user) + [python, "-I", "-S", "-c", program, json.dumps([REPO, mode, codes, port])],
        env=env,
        cwd="/",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


USERS = [pytest.param(0, id="root"), pytest.param(sandbox.NOBODY, id="ordinary-user")]


@pytest.mark.parametrize("mode", ["kernel", "kernel, no hook", "weak"])
@pytest.mark.parametrize("user", USERS)
def test_every_attack_is_contained(host, user, mode):
    if as_user(user) is None or (user and os.geteuid() == 0 and not SYSTEM_PYTHON):
        pytest.skip(
            "cannot run as this user here (root's settings need root; switching needs the system's interpreter)"
        )
    if mode.startswith("kernel") and sandbox.kernel_isolation()[0] is None:
        pytest.skip(
            f"no kernel isolation here: {sandbox.kernel_isolation()[1]} (the weak mode and the refusal are tested)"
        )
    before = {p: p.read_bytes() for p in (host["key"], host["sft"])}
    codes = {name: code.format(**{k: str(v) for k, v in host.items()}) for name, code in ATTACKS.items()}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.1)
        runner = start_runner(user, mode, codes, listener.getsockname()[1], host["home"])
        out, err = runner.communicate(timeout=240)
        assert runner.returncode == 0, err[-2000:]  # the runner (kdagent) is alive and answered
        with pytest.raises(socket.timeout):
            listener.accept()  # nothing ever connected
    results = json.loads(out)
    assert set(results) == set(ATTACKS)
    if mode.startswith("kernel") and all(r[3] == "refused" for r in results.values()):  # e.g. user namespaces forbidden
        pytest.skip(f"no kernel isolation for this user here: {results['cpu'][2]}")
    for name, (ok, output, error, isolation) in results.items():
        shown = f"{name}: {output!r} {error!r}"
        assert KEY_CANARY not in output + str(error) and API_CANARY not in output + str(error), shown
        assert "id_rsa'" not in output, shown  # no listing of the home
        assert isolation.startswith("kernel" if mode.startswith("kernel") else "none"), shown
        if mode in ("kernel", "weak") and name not in (
            "marshal bytecode",
            "disk" if mode == "weak" else "",
        ):  # the policy ends every attack
            assert not ok and error.startswith("error: "), shown
        if mode.startswith("kernel"):
            assert "namespaces(mount,pid,net,ipc,uts" in isolation and "no_new_privs" in isolation, isolation
    # every layer: no prohibited event is allowed to run; the policy names most of them
    if mode != "kernel, no hook":
        for name in ("bytearray path", "memoryview listdir"):
            assert "with a path of type" in results[name][2], (name, results[name])
        for name in ("racing fspath read", "racing fspath os.open", "racing fspath append", "racing pathlib"):
            assert "PermissionError" in results[name][2], (name, results[name])  # the second answer, checked as used
        for name in ("sqlite attach", "sqlite vacuum into", "posix shm", "_posixshmem"):
            assert "is not allowed in the sandbox" in results[name][2], (name, results[name])
    else:  # the kernel alone: the host's files do not exist for the code, writes fail, nothing reaches outside
        assert "FileNotFoundError" in results["private key"][2] and "FileNotFoundError" in results["proc environ"][2]
        assert (
            "Read-only file system" in results["new file in the run"][2]
            or "FileNotFoundError" in results["new file in the run"][2]
        )
        assert "No space left" in results["disk"][2] or "File too large" in results["disk"][2], results["disk"]
    assert "MemoryError" in results["memory"][2], results["memory"]
    # the CPU limit ends a busy loop; on a loaded machine the wall-clock limit may come first: contained either way
    assert "CPU time limit" in results["cpu"][2] or "wall-clock limit" in results["cpu"][2], results["cpu"]
    assert {p: p.read_bytes() for p in (host["key"], host["sft"])} == before
    assert sorted(p.name for p in host["rundir"].iterdir()) == ["sft.jsonl"] and not host["marker"].exists()
    assert not os.path.exists(f"/dev/shm/{host['shm']}")
    assert sandbox_pids(f"{sandbox.SCRATCH_PREFIX}{runner.pid}-") == []
    assert not [e for e in os.listdir(tempfile.gettempdir()) if e.startswith(f"{sandbox.SCRATCH_PREFIX}{runner.pid}-")]


def test_without_kernel_isolation_the_tool_refuses_unless_the_recipe_opts_in(monkeypatch):
    monkeypatch.setenv("KDAGENT_SANDBOX_NO_KERNEL", "1")
    monkeypatch.setattr(sandbox, "kernel_isolation", sandbox.kernel_isolation.__wrapped__)
    start = time.monotonic()
    refused = sandbox.python("print(1)")
    assert time.monotonic() - start < 1 and len(refused.splitlines()) == 1
    assert (
        refused.startswith("error: the python tool needs kernel isolation") and "KDAGENT_SANDBOX_NO_KERNEL" in refused
    )
    assert "allow_unisolated_python: true" in refused
    assert sandbox.run_python("print(1)").isolation == "refused"
    weak = sandbox.run_python("print(1)", allow_unisolated=True)
    assert weak.ok and weak.output == "1\n" and weak.isolation.startswith("none: rlimits, audit hook")

    from kdagent.errors import UserError
    from kdagent.plugins import build_plugins

    plugins = build_plugins(load_entry_points=False)
    with pytest.raises(UserError) as refused_recipe:  # a recipe whose skill would call it is refused up front
        plugins.instantiate("skills", "tool_use", "skills[0]", {"tools": ["python"]})
    assert str(refused_recipe.value) == "skills[0]: tool_use: " + refused.removeprefix("error: ")
    opted_in = plugins.instantiate(
        "skills", "tool_use", "skills[0]", {"tools": ["python"], "allow_unisolated_python": True}
    )
    assert opted_in.tools["python"]("print(2)") == "2"
    assert sandbox.python("print(2)") == refused  # the tool itself, called any other way, refuses each call


@pytest.mark.parametrize("mode", ["kernel", "weak"])
def test_sigkill_of_kdagent_mid_call_leaves_no_process_and_no_folder(host, mode):
    """A real kdagent process runs a long program through the python tool; SIGKILL it mid-call."""
    if mode == "kernel" and sandbox.kernel_isolation()[0] is None:
        pytest.skip(f"no kernel isolation here: {sandbox.kernel_isolation()[1]}")
    long_program = {"sleeper": "import time\nprint('started', flush=True)\ntime.sleep(120)"}
    runner = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            inspect.getsource(run_attacks).replace("wall_s=5", "wall_s=300")
            + "\nimport json, sys\nprint(json.dumps(run_attacks(*json.loads(sys.argv[1]))))\n",
            json.dumps([REPO, mode, long_program, 0]),
        ],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    token = f"{sandbox.SCRATCH_PREFIX}{runner.pid}-"
    deadline, running, since = time.monotonic() + 30, [], time.monotonic()
    while time.monotonic() < deadline:  # the same supervisor and worker for a second: the long program, not the probe
        now = sandbox_pids(token)
        if now != running or len(now) < 2:
            running, since = now, time.monotonic()
        elif time.monotonic() - since > 1:
            break
        time.sleep(0.05)
    assert len(running) >= 2, running
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    runner.stdout.close()
    runner.stderr.close()
    deadline = time.monotonic() + 5
    while sandbox_pids(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_pids(token) == [], "sandbox processes outlived kdagent"
    left = [e for e in os.listdir(tempfile.gettempdir()) if e.startswith(token)]
    if mode == "kernel":
        assert left == []  # the scratch folder was a tmpfs inside the namespace: nothing on the host
    else:  # a folder on the host disk: the next start reaps it
        assert len(left) == 1
        reap = f"import sys; sys.path.insert(0, {REPO!r})\nfrom kdagent.tools import sandbox; print(sandbox.reap_scratch_folders())"
        next_start = subprocess.run(
            [sys.executable, "-I", "-S", "-c", reap], capture_output=True, text=True, timeout=60, check=True
        )
        assert int(next_start.stdout) >= 1 and not os.path.exists(os.path.join(tempfile.gettempdir(), left[0]))


def _tool_recipe(tmp_path, model_dir, base_url):
    import yaml

    recipe = tmp_path / "tools.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "tools",
                "seed": 1,
                "student": {"model": str(model_dir), "max_length": 256},
                "teacher": {
                    "kind": "openai",
                    "model": "scripted",
                    "base_url": base_url,
                    "samples": 1,
                    "max_new_tokens": 64,
                    "timeout_s": 60,
                    "max_retries": 0,
                },
                "domain": {"name": "arithmetic", "seed_tasks": 2, "eval_tasks": 1},
                "skills": [{"name": "tool_use", "options": {"tools": ["python"], "max_steps": 2}}],
                "retrieval": {"enabled": False},
                "feedback": {"fallback_to_reference": True},
                "update": {"epochs": 1, "batch_size": 2},
                "evaluation": {"max_new_tokens": 8},
            }
        )
    )
    return recipe


@pytest.mark.integration
def test_a_rounds_metrics_count_the_python_tool_calls_by_isolation(tmp_path, tiny_model_dir):
    from conftest import run_cli

    if sandbox.kernel_isolation()[0] is None:
        pytest.skip(f"no kernel isolation here: {sandbox.kernel_isolation()[1]} (such a recipe is refused up front)")
    from kdagent.tools.agent import format_call
    from openai_server import ScriptedServer

    def teacher(request, headers):  # a call, then the answer from its result
        answered = "print(6 * 7)" in json.dumps(request["messages"])  # the call was made: its result follows
        return "The answer is 42." if answered else format_call("python", {"code": "print(6 * 7)"})

    with ScriptedServer(teacher) as server:
        result = run_cli(
            "run", str(_tool_recipe(tmp_path, tiny_model_dir, server.url)), "--run-dir", str(tmp_path / "run")
        )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads((tmp_path / "run" / "metrics.json").read_text())["rounds"][0]["counts"]
    assert counts["python_tool_isolation"] == {"kernel": 2}, counts  # one call for each of the two tasks


@pytest.mark.integration
def test_sigkill_of_the_kdagent_cli_mid_tool_call_leaves_no_process_and_no_folder(tmp_path, tiny_model_dir):
    """`kdagent run` with a teacher whose every reply calls the python tool on a long program; SIGKILL it while
    the program runs."""
    from conftest import KDAGENT
    from kdagent.tools.agent import format_call
    from openai_server import ScriptedServer

    if sandbox.kernel_isolation()[0] is None:
        pytest.skip(f"no kernel isolation here: {sandbox.kernel_isolation()[1]}")
    call = format_call("python", {"code": "import time\nprint('working', flush=True)\ntime.sleep(60)"})
    with ScriptedServer(lambda request, headers: call) as server:
        recipe = _tool_recipe(tmp_path, tiny_model_dir, server.url)
        with open(tmp_path / "stderr.txt", "w") as log:
            kdagent = subprocess.Popen(
                [KDAGENT, "run", str(recipe), "--run-dir", str(tmp_path / "run")],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        token = f"{sandbox.SCRATCH_PREFIX}{kdagent.pid}-"
        deadline, running, since = time.monotonic() + 300, [], time.monotonic()
        while time.monotonic() < deadline and kdagent.poll() is None:  # the same processes for a second: the tool call
            now = sandbox_pids(token)
            if now != running or len(now) < 2:
                running, since = now, time.monotonic()
            elif time.monotonic() - since > 1:
                break
            time.sleep(0.05)
        assert len(running) >= 2, (tmp_path / "stderr.txt").read_text()[-2000:]
        os.kill(kdagent.pid, signal.SIGKILL)
        kdagent.wait()
    deadline = time.monotonic() + 5
    while sandbox_pids(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_pids(token) == [], "sandbox processes outlived kdagent"
    assert [e for e in os.listdir(tempfile.gettempdir()) if e.startswith(token)] == []
