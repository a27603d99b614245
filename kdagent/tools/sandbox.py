"""The `python` tool: run model-written code in a separate, locked-down process and return what it prints.

Threat model. The code comes from a model: usually harmless, sometimes careless (an endless loop, a huge
allocation, a stray `rm`), rarely hostile (a prompt injection). It must not reach the network, the files
outside its scratch folder, other processes, or this machine's CPU and memory beyond a budget. Layers,
outermost first:

1. Kernel, when `unshare` works here (probed once): new network and PID namespaces (no interface but a
   loopback of its own; every process of the run dies with the namespace). As root, the code runs as
   uid/gid 65534 (nobody), through unshare or else Popen, so file permissions apply and RLIMIT_NPROC caps
   processes (it never binds root); if nobody may not run this interpreter, the system's of the same
   version is used.
2. Kernel: rlimits set before the code starts, soft = hard so they cannot be raised: CPU seconds, address
   space, file size, open files, processes, no core dumps.
3. Parent: the run has its own session, SIGKILLed as a whole at the wall-clock limit; the working folder
   (also HOME and TMPDIR) is a fresh temporary directory, deleted afterwards; the environment holds no
   secrets; output goes to a file and only its first characters are read back.
4. Policy: an audit hook (PEP 578), installed before the code runs, ends the run at the first forbidden
   event (so the code cannot catch it and try again): processes (system, exec, spawn, fork, Popen),
   sockets, ctypes, native modules from outside the standard library, signals to other processes, open
   or list outside the folder (reading also the standard library), file changes outside it, chmod,
   links, chdir, `input()`, new audit hooks, gc and other threads' frames, hand-made code objects. The
   hook keeps its state in default arguments and binds every builtin it uses, so monkeypatching `os`,
   `builtins` or `__main__` does not change it. A few functions no event covers (setsid, pidfd_open,
   mkfifo, ...) are removed from `os` first, and the interpreter never shuts down (finalizers would run
   after the hooks are cleared).

Audit hooks are a policy layer, not a security boundary: code that reaches native execution (for example
through a crafted bytecode string loaded with `marshal`) or that races a path-like object's `__fspath__`
escapes it. Then only the kernel layers hold: with no `unshare`, no namespaces; and if no interpreter runs
as nobody, the code has this process's uid. Only the standard library is importable (`-I -S`).
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

NOBODY = 65534
FILE_MB = 16  # the largest file the code may write, its output included
MAX_FILES = 64
MAX_PROCESSES = 16  # processes and threads of the sandbox's uid (a backstop behind the hook's ban on fork)


@dataclass
class SandboxResult:
    ok: bool
    output: str
    error: str | None
    seconds: float


def _install_policy(root, report_fd):
    """The audit hook; runs in the sandboxed interpreter (shipped there as source) before the user's code."""
    import os
    import sys

    def hook(event, args, root=root, stdlib=tuple(p for p in sys.path if p), report_fd=report_fd,
             denied=frozenset("""os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty subprocess.Popen
             pty.spawn os.kill os.killpg signal.pthread_kill os.chdir os.chmod os.chown os.chflags os.lchflags
             os.link os.symlink builtins.input sys.addaudithook sys._current_frames gc.get_objects
             gc.get_referrers gc.get_referents code.__new__ resource.setrlimit resource.prlimit
             sqlite3.enable_load_extension sqlite3.load_extension""".split()),
             denied_prefixes=("socket.", "ctypes."), denied_modules=frozenset({"ctypes", "_ctypes", "_posixsubprocess"}),
             writes=frozenset("""os.remove os.rename os.rmdir os.mkdir os.utime os.truncate os.setxattr
             os.removexattr sqlite3.connect dbm.open""".split()),
             reads=frozenset({"os.listdir", "os.scandir", "os.getxattr", "os.listxattr"}),
             write_flags=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
             fspath=os.fspath, write=os.write, exit=os._exit, flushes=(sys.stdout.flush, sys.stderr.flush),
             str=str, bytes=bytes, int=int, type=type, TypeError=TypeError, BaseException=BaseException):
        paths, allowed, problem = (), stdlib + (root,), None
        if event in denied or event.startswith(denied_prefixes) or event == "import" and str.__str__(args[0]) in denied_modules:
            problem = f"{event} {args[0]}" if event == "import" else event
            problem += " is not allowed in the sandbox"
        elif event == "open":  # os.open (mode None) stays in the folder even to read: its fds serve as dir_fd
            paths = (args[0],)
            allowed = (root,) if args[1] is None or args[2] & write_flags else allowed
        elif event in writes:
            paths, allowed = args, (root,)
        elif event in reads:
            paths = (args[0],)
        elif event == "import" and args[1] is not None:  # a native extension module is being loaded
            paths, allowed = (args[1],), stdlib
        for path in paths:
            if type(path) is int:  # a file descriptor, itself opened through this hook
                continue
            try:
                path = fspath(path)
            except TypeError:  # not a path (a mode, a dir_fd of None, times)
                continue
            # An exact str (subclasses could lie), made absolute and normalized without touching the file
            # system: links and chdir are denied, so relative paths start at root and this is where they lead.
            path = bytes.decode(path, "utf-8", "surrogateescape") if type(path) is bytes else str.__str__(path)
            parts = []
            for part in (path if path.startswith("/") else root + "/" + path).split("/"):
                if part == "..":
                    parts = parts[:-1]
                elif part not in ("", "."):
                    parts.append(part)
            path, inside = "/" + "/".join(parts), False
            for folder in allowed:
                inside = inside or path == folder or path.startswith(folder + "/")
            if not inside:
                problem = f"{event} {path!r} is outside the sandbox's folder"
        if problem is not None:  # end the run now: user code must not get to catch this and carry on
            for flush in flushes:
                try:
                    flush()
                except BaseException:
                    pass
            try:
                write(report_fd, ("error: PermissionError: " + problem).encode("utf-8", "replace"))
            finally:
                exit(3)

    sys.addaudithook(hook)


def _main(root, report_fd, cpu_s, limits):
    """The sandboxed interpreter's entry point: a supervisor that reports how the worker ended, and the worker."""
    import os
    import posix
    import resource
    import signal
    import sys

    # The code runs in a child: PID 1 of a namespace ignores signals it has no handler for, and unshare does
    # not pass a SIGKILL on. The supervisor (PID 1) reports how the worker ended.
    worker = os.fork()
    if worker:
        _, status, usage = os.wait4(worker, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            name = signal.Signals(-code).name
            cpu_out = -code in (signal.SIGKILL, signal.SIGXCPU) and usage.ru_utime + usage.ru_stime >= cpu_s - 0.1
            os.write(report_fd, (f"error: CPU time limit exceeded ({cpu_s} s)" if cpu_out else f"error: killed by {name}").encode())
        os._exit(0 if code == 0 else 1)

    for name, value in limits:
        resource.setrlimit(getattr(resource, name), (value, value))
    code = sys.stdin.buffer.read().decode("utf-8", "replace")
    for module in (os, posix, signal):  # not audited: a new session or group (out of the kill), pidfds, special files
        for name in ("setsid", "setpgid", "setpgrp", "pidfd_open", "pidfd_send_signal", "mkfifo", "mknod"):
            vars(module).pop(name, None)
    stdout, stderr = sys.stdout, sys.stderr
    _install_policy(root, report_fd)
    error = None
    try:
        try:
            exec(compile(code, "<tool>", "exec"), {"__name__": "__main__"})
        except SystemExit as exc:
            error = None if exc.code in (None, 0) else f"error: SystemExit: {exc.code}"
        except BaseException as exc:
            error = f"error: {type(exc).__name__}"  # then the message and line, unless formatting them fails
            line, tb = None, exc.__traceback__
            while tb is not None:
                line = tb.tb_lineno if tb.tb_frame.f_code.co_filename == "<tool>" else line
                tb = tb.tb_next
            error += (f": {exc}" if str(exc) else "") + (f" (line {line})" if line else "")
    finally:
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        try:
            os.write(report_fd, (error or "").encode("utf-8", "replace"))
        finally:
            os._exit(1 if error else 0)  # no interpreter shutdown: it clears the audit hooks before finalizers run


@functools.cache
def _source() -> str:
    return inspect.getsource(_install_policy) + "\n" + inspect.getsource(_main)


def _execute(plan, code: str, wall_s: float, cpu_s: int, memory_mb: int, max_output_chars: int) -> SandboxResult:
    prefix, python, uid = plan
    start = time.monotonic()
    root = tempfile.mkdtemp(prefix="kdagent-sandbox-")
    try:
        if uid is not None:
            os.chown(root, uid, uid)
        limits = [("RLIMIT_CPU", cpu_s), ("RLIMIT_AS", memory_mb << 20), ("RLIMIT_FSIZE", FILE_MB << 20),
                  ("RLIMIT_NOFILE", MAX_FILES), ("RLIMIT_NPROC", MAX_PROCESSES), ("RLIMIT_CORE", 0)]
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as report:
            stdin.write(code.encode("utf-8", "surrogatepass"))
            stdin.seek(0)
            source = f"{_source()}\n_main({root!r}, {report.fileno()}, {cpu_s}, {limits!r})\n"
            env = {"PATH": "/usr/bin:/bin", "HOME": root, "TMPDIR": root, "LANG": "C.UTF-8"}
            drop = {"user": uid, "group": uid, "extra_groups": []} if uid is not None and not prefix else {}
            try:
                proc = subprocess.Popen(prefix + [python, "-I", "-S", "-B", "-u", "-X", "utf8", "-c", source], cwd=root,
                                        env=env, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                                        pass_fds=(report.fileno(),), start_new_session=True, **drop)
            except OSError as exc:  # e.g. nobody may not run this interpreter
                return SandboxResult(False, "", f"error: the sandbox did not start: {exc}", time.monotonic() - start)
            try:
                proc.wait(timeout=wall_s)
                report.seek(0)
                error = report.read(2000).decode("utf-8", "replace") or None
                if error is None and proc.returncode:
                    error = f"error: exit status {proc.returncode}"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the session: unshare, the supervisor, the worker
                proc.wait()
                error = f"error: killed (wall-clock limit {wall_s:g} s)"
            size = os.fstat(out.fileno()).st_size
            out.seek(0)
            output = out.read(4 * max_output_chars + 4).decode("utf-8", "replace")
        if len(output) > max_output_chars or size > 4 * max_output_chars + 4:
            output = output[:max_output_chars] + f"\n[output truncated to {max_output_chars} characters]"
        return SandboxResult(error is None, output, error, time.monotonic() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _plans() -> list[tuple[list[str], str, int | None]]:
    """Ways to launch, strongest first: (command prefix, interpreter, uid the code runs as; None: this uid)."""
    unshare, root = shutil.which("unshare"), os.geteuid() == 0
    namespaces = [unshare, "--net", "--pid", "--fork", "--kill-child"]
    # as root, drop to nobody, with this interpreter or, when nobody may not run it, the system's
    system = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/local/bin:/usr/bin:/bin")
    pythons = [p for p in dict.fromkeys([sys.executable, system]) if p] if root else []
    plans = []
    if unshare and root:
        plans += [(namespaces + ["--setuid", str(NOBODY), "--setgid", str(NOBODY), "--"], p, NOBODY) for p in pythons]
    elif unshare:
        plans.append((namespaces + ["--map-root-user", "--"], sys.executable, None))  # in a user namespace
    plans += [([], p, NOBODY) for p in pythons]  # Popen drops the uid
    if unshare and root:
        plans.append((namespaces + ["--"], sys.executable, None))
    return plans + [([], sys.executable, None)]


@functools.cache
def _plan() -> tuple[list[str], str, int | None]:
    """The strongest way to launch that works here, probed once."""
    plans = _plans()
    for plan in plans[:-1]:
        if _execute(plan, "print(1)", 10.0, 5, 256, 100).output == "1\n":
            return plan
    return plans[-1]


def run_python(code: str, *, wall_s: float = 10.0, cpu_s: int = 5, memory_mb: int = 512,
               max_output_chars: int = 4000) -> SandboxResult:
    """Run `code` in the sandbox; `output` is what it printed (stdout and stderr), cut to `max_output_chars`."""
    return _execute(_plan(), code, wall_s, cpu_s, memory_mb, max_output_chars)


def python(code: str) -> str:
    """Run Python code in a sandbox (standard library only, no network, no files outside a scratch folder,
    a few seconds of CPU) and return what it prints; use print() to show results."""
    result = run_python(code)
    output = result.output.rstrip()
    if result.ok:
        return output or "(no output)"
    return result.error + (f"\noutput before the error:\n{output}" if output else "")
