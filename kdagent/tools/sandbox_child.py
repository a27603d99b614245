"""What runs inside the sandboxed interpreter (kdagent/tools/sandbox.py), shipped there as source: `main`, the
supervisor that reports how the worker ended, and the worker, which installs the audit hook (`install_policy`,
layer 4 of sandbox.py's docstring) and then runs the code. The child runs `-I -S` with only this source, so
neither function may use this module's globals or imports: each imports what it needs itself.
"""


def install_policy(root, report_fd):
    """The audit hook; runs in the sandboxed interpreter (shipped there as source) before the user's code."""
    import builtins
    import io
    import os
    import pathlib
    import sys

    fspath, pathlike = os.fspath, os.PathLike

    # The hook accepts only paths it can read without running user code (str, bytes, a file descriptor):
    # `open`, pathlib and the os calls pathlib makes get path-like objects turned into a str once, here,
    # so the string the hook checks is the string the call uses. Code that undoes this gets refused.
    def plain(value, fspath=fspath, pathlike=pathlike, isinstance=isinstance):
        return fspath(value) if isinstance(value, pathlike) else value

    def converting(function, plain=plain):
        def call(*args, **kwargs):
            return function(*[plain(a) for a in args], **{k: plain(v) for k, v in kwargs.items()})

        call.__name__, call.__doc__ = function.__name__, function.__doc__
        return call

    class StrPaths:
        def __init__(self, module):
            self.module = module

        def __getattr__(self, name):
            value = getattr(self.module, name)
            return converting(value) if callable(value) and not isinstance(value, type) else value

    builtins.open = io.open = converting(io.open)
    pathlib.os, pathlib.io = StrPaths(os), StrPaths(io)

    path_args = {
        "open": (0,),
        "os.listdir": (0,),
        "os.scandir": (0,),
        "os.getxattr": (0,),
        "os.listxattr": (0,),
        "os.rename": (0, 1),
    }

    def hook(
        event,
        args,
        root=root,
        stdlib=tuple(p for p in sys.path if p),
        report_fd=report_fd,
        path_args=path_args,
        denied=frozenset(
            """os.system os.exec os.posix_spawn os.spawn os.fork os.forkpty subprocess.Popen
             pty.spawn os.kill os.killpg signal.pthread_kill os.chdir os.chmod os.chown os.chflags os.lchflags
             os.link os.symlink builtins.input sys.addaudithook sys._current_frames gc.get_objects
             gc.get_referrers gc.get_referents code.__new__ resource.setrlimit resource.prlimit
             cpython.PyInterpreterState_New""".split()
        ),
        denied_prefixes=("socket.", "ctypes.", "sqlite3."),
        # ctypes: native calls; _posixsubprocess: fork and exec outside any event; sqlite3: files through
        # SQL (ATTACH, VACUUM INTO); _posixshmem: shared memory that outlives the run; sub-interpreters
        # have no audit hook; the _test modules poke at memory
        denied_modules=frozenset(
            """ctypes _ctypes _ctypes_test _posixsubprocess sqlite3 _sqlite3 _posixshmem
             _xxsubinterpreters _xxinterpchannels _testcapi _testinternalcapi _testbuffer _testmultiphase
             _testimportmultiple _testclinic _testsinglephase""".split()
        ),
        writes=frozenset(
            "os.remove os.rename os.rmdir os.mkdir os.utime os.truncate os.setxattr os.removexattr dbm.open".split()
        ),
        reads=frozenset({"os.listdir", "os.scandir", "os.getxattr", "os.listxattr"}),
        write_flags=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
        write=os.write,
        exit=os._exit,
        flushes=(sys.stdout.flush, sys.stderr.flush),
        str=str,
        bytes=bytes,
        int=int,
        type=type,
        issubclass=issubclass,
        BaseException=BaseException,
    ):
        paths, allowed, problem = (), stdlib + (root,), None
        if (
            event in denied
            or event.startswith(denied_prefixes)
            or event == "import"
            and str.__str__(args[0]) in denied_modules
        ):
            problem = f"{event} {str.__str__(args[0])}" if event == "import" else event
            problem += " is not allowed in the sandbox"
        elif event == "open":  # os.open (mode None) stays in the folder even to read: its fds serve as dir_fd
            paths = (args[0],)
            allowed = (root,) if args[1] is None or args[2] & write_flags else allowed
        elif event in writes or event in reads:
            paths = tuple(args[i] for i in path_args.get(event, (0,)))
            allowed = (root,) if event in writes else allowed
        elif event == "import" and args[1] is not None:  # a native extension module is being loaded
            paths, allowed = (args[1],), stdlib
        for path in paths:
            if path is None or type(path) is int:  # the current folder, or a descriptor opened through this hook
                continue
            # Only data the call itself reads: an exact str or bytes copy (subclasses could lie in methods, a
            # path-like object could answer differently when the call asks again); anything else is refused.
            if issubclass(type(path), str):
                path = str.__str__(path)
            elif issubclass(type(path), bytes):
                path = bytes.decode(path, "utf-8", "surrogateescape")
            else:
                problem = f"{event} with a path of type {type(path).__name__} is not allowed in the sandbox (use a str)"
                break
            # Made absolute and normalized without touching the file system: links and chdir are denied, so
            # relative paths start at root and this is where they lead.
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


def main(root, report_fd, cpu_s, wall_s, limits):
    """The sandboxed interpreter's entry point: a supervisor that reports how the worker ended, and the worker."""
    import os
    import posix
    import resource
    import signal
    import sys
    import threading
    import time

    # The code runs in a child: PID 1 of a namespace ignores signals it has no handler for, and unshare does
    # not pass a SIGKILL on. The supervisor (PID 1) reports how the worker ended, and ends it at its own
    # timer should kdagent's never fire (once PID 1 exits, the kernel kills the rest of the namespace).
    worker = os.fork()
    if worker:

        def expire(signum, frame):
            os.kill(worker, signal.SIGKILL)
            os.write(report_fd, f"error: killed (wall-clock limit {wall_s:g} s)".encode())
            os._exit(1)

        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, wall_s + 0.5)
        _, status, usage = os.wait4(worker, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            name = signal.Signals(-code).name
            cpu_out = -code in (signal.SIGKILL, signal.SIGXCPU) and usage.ru_utime + usage.ru_stime >= cpu_s - 0.1
            os.write(
                report_fd,
                (f"error: CPU time limit exceeded ({cpu_s} s)" if cpu_out else f"error: killed by {name}").encode(),
            )
        os._exit(0 if code == 0 else 1)

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    supervisor = os.getppid()

    def watch():  # without a PID namespace, nothing else ends the worker once its supervisor is gone
        while os.getppid() == supervisor:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    for name, value in limits:
        resource.setrlimit(getattr(resource, name), (value, value))
    code = sys.stdin.buffer.read().decode("utf-8", "replace")
    for module in (os, posix, signal):  # not audited: a new session or group (out of the kill), pidfds, special files
        for name in ("setsid", "setpgid", "setpgrp", "pidfd_open", "pidfd_send_signal", "mkfifo", "mknod"):
            vars(module).pop(name, None)
    stdout, stderr = sys.stdout, sys.stderr
    install_policy(root, report_fd)
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
