"""The `python` tool: run model-written code in a separate, locked-down process and return what it prints.

Threat model. The code comes from a model: usually harmless, sometimes careless (an endless loop, a huge
allocation, a stray `rm`), rarely hostile (a prompt injection). It may do nothing outside its scratch
folder: no network, no other file, no other process, no more than a budget of CPU, memory and disk.
Layers, outermost first (docs/reliability.md has the tests and figures):

1. Kernel isolation (kdagent/tools/isolation.py), probed once: `unshare` makes mount, PID, network, IPC
   and UTS namespaces (and a user namespace when kdagent is not root); inside them the code sees a
   read-only root holding only the interpreter, its standard library and the shared libraries, a few
   device files, a fresh `/proc` of its own PID namespace, and its scratch folder: a size-capped tmpfs
   (`SCRATCH_MB`) that vanishes with the namespace. It runs as nobody (as root) or with no capabilities
   (in the user namespace), with no_new_privs, under Landlock (writes only in the scratch folder, no TCP,
   no signals outside) and a seccomp filter (no mount, namespace, ptrace, BPF, keyring, io_uring calls).
   Where this cannot be set up, the tool refuses each call in one line naming what is missing and the
   setting that allows running without it (`allow_unisolated`; the tool_use skill's
   `allow_unisolated_python`). Each result says which isolation it had (`SandboxResult.isolation`;
   `ISOLATION_COUNTS` counts them per process).
2. Kernel: rlimits set before the code starts, soft = hard so they cannot be raised: CPU seconds, address
   space, file size, open files, processes, no core dumps.
3. Supervision: the code runs in a child of a supervisor that reports how it ended and kills it at its own
   wall-clock timer; kdagent SIGKILLs the run's session at the limit too. `setpriv --pdeathsig` and
   unshare's `--kill-child` end the run when kdagent dies (PID 1 of the namespace exits, the kernel kills
   the rest). The environment holds no secrets; output goes to a file and only its first characters are
   read back.
4. Policy (kdagent/tools/sandbox_child.py): an audit hook (PEP 578), installed before the code runs, ends
   the run at the first forbidden event (so the code cannot catch it and try again): processes (system,
   exec, spawn, fork, Popen), sockets, ctypes, sqlite3 (files through ATTACH and VACUUM INTO), POSIX shared
   memory, sub-interpreters, native modules from outside the standard library, signals to other processes,
   open or list outside the folder (reading also the standard library), file changes outside it, chmod,
   links, chdir, `input()`, new audit hooks, gc and other threads' frames, hand-made code objects. A path
   argument counts only as an exact str, bytes or a file descriptor; any other type is refused, so no object
   can answer one way to the hook and another to the call (`open` and pathlib hand the calls plain strings).
   The hook keeps its state in default arguments and binds every builtin it uses, so monkeypatching `os`,
   `builtins` or `__main__` does not change it. A few functions no event covers (setsid, pidfd_open, mkfifo,
   ...) are removed from `os` first, and the interpreter never shuts down (finalizers would run after the
   hooks are cleared). Only the standard library is importable (`-I -S`).

The audit hook is a policy layer, not a security boundary: code that reaches native execution (crafted
bytecode loaded with `marshal`, say) escapes it, and then the kernel layers hold alone. Without them (the
opted-in weak mode) the scratch folder is on this machine's disk (`SCRATCH_PREFIX` in the temporary
folder, reaped on the next start when a killed kdagent left it), the code runs as nobody when kdagent is
root and otherwise as kdagent's own user, and only layers 2 to 4 apply.
"""

from __future__ import annotations

import collections
import functools
import inspect
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from kdagent.tools import isolation, sandbox_child

NOBODY = 65534
FILE_MB = 16  # the largest file the code may write, its output included
MAX_FILES = 64
MAX_PROCESSES = 16  # processes and threads of the sandbox's uid (a backstop behind the hook's ban on fork)
SCRATCH_MB = 64  # the scratch folder's size under kernel isolation (a tmpfs)
SCRATCH_PREFIX = "kdagent-sandbox-"
ISOLATION_COUNTS: collections.Counter = (
    collections.Counter()
)  # calls of this process by isolation: kernel, none, refused


@dataclass
class SandboxResult:
    ok: bool
    output: str
    error: str | None
    seconds: float
    isolation: str = ""  # "kernel: <layers>", "none: <what held>" (opted in), "refused", or "failed" (did not start)


@functools.cache
def _source() -> str:
    return inspect.getsource(sandbox_child.install_policy) + "\n" + inspect.getsource(sandbox_child.main)


@functools.cache
def _enter_source() -> str:
    return inspect.getsource(isolation.enter) + "\nimport json, sys\nenter(json.loads(sys.argv[1]))\n"


@dataclass(frozen=True)
class Plan:
    """One way to launch: `kernel` (namespaces built by `isolation.enter`) or not; the interpreter; the uid
    the code runs as (None: this process's, or the mapped root of a user namespace)."""

    kernel: bool
    python: str
    uid: int | None


def _interpreter() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _scratch_name() -> str:
    """A fresh name under the known prefix; the pid lets a later start reap what a killed kdagent left."""
    return os.path.join(tempfile.gettempdir(), f"{SCRATCH_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")


@functools.cache
def reap_scratch_folders() -> int:
    """Remove the scratch folders of kdagent processes that no longer exist (killed mid-call); once per process."""
    removed = 0
    for entry in os.listdir(tempfile.gettempdir()):
        pid = entry[len(SCRATCH_PREFIX) :].split("-")[0]
        if not entry.startswith(SCRATCH_PREFIX) or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running (or a pid we may not signal, so alive)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(tempfile.gettempdir(), entry), ignore_errors=True)
        removed += 1
    return removed


def _execute(plan: Plan, code: str, wall_s: float, cpu_s: int, memory_mb: int, max_output_chars: int) -> SandboxResult:
    start = time.monotonic()
    root = _scratch_name()
    if not plan.kernel:  # a folder on this machine's disk; with kernel isolation it is a tmpfs in the namespace
        os.mkdir(root, 0o700)
    try:
        if plan.uid is not None and not plan.kernel:
            os.chown(root, plan.uid, plan.uid)
        limits = [
            ("RLIMIT_CPU", cpu_s),
            ("RLIMIT_AS", memory_mb << 20),
            ("RLIMIT_FSIZE", FILE_MB << 20),
            ("RLIMIT_NOFILE", MAX_FILES),
            ("RLIMIT_NPROC", MAX_PROCESSES + _tasks_sharing(plan)),
            ("RLIMIT_CORE", 0),
        ]
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as report:
            stdin.write(code.encode("utf-8", "surrogatepass"))
            stdin.seek(0)
            source = f"{_source()}\nmain({root!r}, {report.fileno()}, {cpu_s}, {wall_s}, {limits!r})\n"
            env = {"PATH": "/usr/bin:/bin", "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
            argv = [plan.python, "-I", "-S", "-B", "-u", "-X", "utf8", "-c", source]
            drop = {}
            if plan.kernel:
                read_only, hidden = _root_paths(plan.python)
                config = {
                    "report_fd": report.fileno(),
                    "scratch": root,
                    "scratch_mb": SCRATCH_MB,
                    "read_only": read_only,
                    "hidden": hidden,
                    "uid": plan.uid,
                    "user_ns": os.geteuid() != 0,
                    "argv": argv,
                    "env": env,
                }
                argv = _kernel_prefix() + [plan.python, "-I", "-S", "-B", "-c", _enter_source(), json.dumps(config)]
                cwd = "/"
            else:
                drop = {"user": plan.uid, "group": plan.uid, "extra_groups": []} if plan.uid is not None else {}
                setpriv = shutil.which("setpriv")
                argv = ([setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []) + argv
                cwd = root
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=stdin,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(report.fileno(),),
                    start_new_session=True,
                    **drop,
                )
            except OSError as exc:  # e.g. nobody may not run this interpreter
                return SandboxResult(
                    False, "", f"error: the sandbox did not start: {exc}", time.monotonic() - start, "failed"
                )
            killed = f"error: killed (wall-clock limit {wall_s:g} s)"
            timed_out = False
            try:
                proc.wait(timeout=wall_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the session: unshare, the supervisor, the worker
                proc.wait()
                timed_out = True
            report.seek(0)
            error = report.read(2000).decode("utf-8", "replace")
            isolation = None
            if error.startswith("isolation"):  # the kernel layers' own line, then the run's
                isolation, _, error = error.partition("\n")
            error = killed if timed_out else error or None
            if error is None and proc.returncode:
                error = f"error: exit status {proc.returncode}"
            size = os.fstat(out.fileno()).st_size
            out.seek(0)
            output = out.read(4 * max_output_chars + 4).decode("utf-8", "replace")
        if isolation and isolation.startswith("isolation failed"):
            return SandboxResult(False, "", f"error: the sandbox's {isolation}", time.monotonic() - start, "failed")
        if plan.kernel and isolation is None and error != killed:
            why = output.strip().splitlines()[-1:] or [error or "no report"]
            return SandboxResult(
                False,
                "",
                f"error: the sandbox's isolation did not start: {why[0][:200]}",
                time.monotonic() - start,
                "failed",
            )
        if len(output) > max_output_chars or size > 4 * max_output_chars + 4:
            output = output[:max_output_chars] + f"\n[output truncated to {max_output_chars} characters]"
        label = "kernel: " + isolation.partition(": ")[2] if plan.kernel and isolation else _weak_label(plan)
        return SandboxResult(error is None, output, error, time.monotonic() - start, label)
    finally:
        if not plan.kernel:
            shutil.rmtree(root, ignore_errors=True)


def _tasks_sharing(plan: Plan) -> int:
    """Threads that count against the code's RLIMIT_NPROC besides its own: those of kdagent's user when the
    code keeps that uid (a user namespace maps it; the weak mode as an ordinary user), none for nobody."""
    if plan.uid is not None:
        return 0
    uid, count = os.getuid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:  # gone meanwhile
            pass
    return count


def _weak_label(plan: Plan) -> str:
    return "none: rlimits, audit hook" + (f", uid {plan.uid}" if plan.uid is not None else "")


@functools.cache
def _root_paths(python: str) -> tuple[list[str], list[str]]:
    return isolation.plan_paths(python)


def _kernel_prefix() -> list[str]:
    """setpriv makes unshare die with kdagent (its parent-death signal); unshare makes the namespaces and
    SIGKILLs their PID 1 when it dies itself."""
    setpriv, unshare = shutil.which("setpriv"), shutil.which("unshare")
    namespaces = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    if os.geteuid() != 0:
        namespaces = ["--user", "--map-root-user"] + namespaces
    return ([setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []) + [unshare] + namespaces + ["--"]


@functools.cache
def kernel_isolation() -> tuple[Plan | None, str]:
    """(the kernel-isolated way to launch, its layers) when it works here, else (None, what is missing); probed
    once. `KDAGENT_SANDBOX_NO_KERNEL=1` makes it missing, to try the refusal and the weak mode."""
    if os.environ.get("KDAGENT_SANDBOX_NO_KERNEL"):
        return None, "KDAGENT_SANDBOX_NO_KERNEL is set"
    if not shutil.which("unshare"):
        return None, "the unshare command (util-linux) is not installed"
    plan = Plan(True, _interpreter(), NOBODY if os.geteuid() == 0 else None)
    try:
        result = _execute(plan, "print(1)", 20.0, 5, 256, 100)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:  # e.g. the interpreter's paths could not be read
        return None, f"the sandbox's isolation did not start: {exc}"
    if result.output != "1\n":
        return None, (result.error or result.output or "no output").removeprefix("error: the sandbox's ")
    return plan, result.isolation


def _weak_plans() -> list[Plan]:
    """Ways to launch without kernel isolation, strongest first: as root, the code runs as nobody with this
    interpreter or, when nobody may not run it, the system's of the same version."""
    if os.geteuid() != 0:
        return [Plan(False, sys.executable, None)]
    system = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/local/bin:/usr/bin:/bin")
    return [Plan(False, p, NOBODY) for p in dict.fromkeys([sys.executable, system]) if p] + [
        Plan(False, sys.executable, None)
    ]


@functools.cache
def _weak_plan() -> Plan:
    plans = _weak_plans()
    for plan in plans[:-1]:
        if _execute(plan, "print(1)", 10.0, 5, 256, 100).output == "1\n":
            return plan
    return plans[-1]


def run_python(
    code: str,
    *,
    wall_s: float = 10.0,
    cpu_s: int = 5,
    memory_mb: int = 512,
    max_output_chars: int = 4000,
    allow_unisolated: bool = False,
) -> SandboxResult:
    """Run `code` in the sandbox; `output` is what it printed (stdout and stderr), cut to `max_output_chars`.
    Without kernel isolation it refuses, unless `allow_unisolated` (the rlimits and the audit hook only)."""
    reap_scratch_folders()
    plan, _ = kernel_isolation()
    if plan is None and not allow_unisolated:
        result = SandboxResult(False, "", refusal(), 0.0, "refused")
    else:
        result = _execute(plan or _weak_plan(), code, wall_s, cpu_s, memory_mb, max_output_chars)
    ISOLATION_COUNTS[result.isolation.partition(":")[0]] += 1
    return result


def refusal() -> str:
    """The one-line error of a python tool call where kernel isolation is missing."""
    return (
        f"error: the python tool needs kernel isolation, which is missing here ({kernel_isolation()[1]}); "
        "the tool_use skill option allow_unisolated_python: true runs code without it (rlimits and an audit hook only)"
    )


def _result_text(result: SandboxResult) -> str:
    output = result.output.rstrip()
    if result.ok:
        return output or "(no output)"
    return result.error + (f"\noutput before the error:\n{output}" if output else "")


def python(code: str) -> str:
    """Run Python code in a sandbox (standard library only, no network, no files outside a scratch folder,
    a few seconds of CPU) and return what it prints; use print() to show results."""
    return _result_text(run_python(code))


def python_allowing_unisolated(code: str) -> str:
    """Run Python code in a sandbox (standard library only, no network, no files outside a scratch folder,
    a few seconds of CPU) and return what it prints; use print() to show results."""
    return _result_text(run_python(code, allow_unisolated=True))
