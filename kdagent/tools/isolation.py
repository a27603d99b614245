"""Kernel isolation for the `python` tool's sandbox: what runs inside fresh namespaces before the code.

`unshare` (util-linux) makes the namespaces: mount, PID, network, IPC and UTS, plus a user namespace when
kdagent is not root. Inside them, `enter` (shipped as source to a bare interpreter, `-I -S`) builds the
code's world and then execs the sandbox's interpreter:

- a read-only root on a small tmpfs (laid over an existing folder, in this mount namespace only) holding
  only the interpreter, its standard library (with any site-packages hidden under an empty mount) and
  the system's shared libraries, `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom`,
  a fresh `/proc` of the new PID namespace (so no other process is visible) and the scratch folder, the
  only writable place: a size-capped tmpfs at the path the sandbox names, gone with the namespace;
  `pivot_root` then detaches the host's tree, so no home, run directory or other file exists for the code;
- as root, uid/gid 65534 (nobody) and no groups; otherwise, in the user namespace, every capability
  dropped (bounding set, securebits, capset) so the mapped root is powerless;
- `PR_SET_NO_NEW_PRIVS`, then `PR_SET_PDEATHSIG` (SIGKILL once `unshare` dies);
- Landlock where the kernel has it: reading and executing under `/`, writing only in the scratch folder
  and `/dev/null`; from ABI 4 no TCP bind or connect; from ABI 6 no signals or abstract Unix sockets
  outside the sandbox;
- on x86-64, a seccomp filter refusing (EPERM) the calls no Python program needs and that widen the
  kernel's attack surface: mount and namespace calls, ptrace and cross-process memory, BPF, perf, keys,
  io_uring, userfaultfd, module and kexec calls, `clone` with namespace flags (`clone3` answers ENOSYS
  so the C library falls back to `clone`).

It reports the layers it applied as the first line of the report file (`isolation: ...`), or why it
could not (`isolation failed: ...`, exit status 4). Syscall numbers and constants are Linux's own ABI.
"""

from __future__ import annotations


def enter(config):  # one straight sequence, kept in one piece so it can be shipped as source
    """Runs as PID 1 of the new namespaces; never returns (execs the sandbox's interpreter or exits 4)."""
    import ctypes
    import os
    import platform

    report_fd, scratch = config["report_fd"], config["scratch"]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    numbers = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}.get(
        platform.machine()
    )
    ms = {
        "rdonly": 1,
        "nosuid": 2,
        "nodev": 4,
        "noexec": 8,
        "remount": 32,
        "noatime": 1024,
        "nodiratime": 2048,
        "bind": 4096,
        "rec": 16384,
        "private": 1 << 18,
        "relatime": 1 << 21,
    }
    layers = []
    # the new root is a tmpfs laid over an existing folder, in this mount namespace only
    newroot = next(
        (
            d
            for d in ("/mnt", "/media", "/srv", "/opt", "/var/tmp", "/tmp")
            if os.path.isdir(d) and not any(p == d or p.startswith(d + "/") for p in config["read_only"])
        ),
        None,
    )

    def check(result, what):
        if result < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")
        return result

    def mount(source, target, fstype, flags, data=None):
        def enc(s):
            return None if s is None else s.encode()

        check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")

    def prctl(option, arg2=0):
        check(libc.prctl(option, ctypes.c_ulong(arg2), 0, 0, 0), f"prctl {option}")

    def locked_flags(path):  # a remount must keep the flags the outer namespace locked (nosuid, noexec, atime)
        f, out = os.statvfs(path).f_flag, 0
        for st, name in (
            (2, "nosuid"),
            (4, "nodev"),
            (8, "noexec"),
            (1024, "noatime"),
            (2048, "nodiratime"),
            (4096, "relatime"),
        ):
            out |= ms[name] if f & st else 0
        return out

    def inside(path):
        return newroot + path

    def place(path, is_dir):  # an empty mount point in the new root, its parents readable by anyone
        target = inside(path)
        os.makedirs(target if is_dir else os.path.dirname(target), mode=0o755, exist_ok=True)
        if not is_dir and not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        return target

    def bind(path):
        target = place(path, os.path.isdir(path))
        mount(path, target, None, ms["bind"] | ms["rec"])
        mount(
            None,
            target,
            None,
            ms["remount"] | ms["bind"] | ms["rdonly"] | ms["nosuid"] | ms["nodev"] | locked_flags(path),
        )

    try:
        if numbers is None or newroot is None:
            raise OSError(
                0, f"no pivot_root number for {platform.machine()}" if numbers is None else "no folder for the new root"
            )
        mount(None, "/", None, ms["rec"] | ms["private"])
        mount("kdagent-sandbox", newroot, "tmpfs", ms["nosuid"] | ms["nodev"], "size=4m,mode=0755")
        for path in config["read_only"]:
            if os.path.islink(path) and path.count("/") == 1:  # /lib -> usr/lib, as on the host
                os.symlink(os.readlink(path), inside(path))
            elif os.path.exists(path):
                bind(os.path.realpath(path))
        for path in config["hidden"]:  # site-packages inside the standard library's folder
            if os.path.isdir(path):
                mount("none", inside(path), "tmpfs", ms["rdonly"] | ms["nosuid"] | ms["nodev"], "size=4k,mode=0555")
        for name in ("null", "zero", "full", "random", "urandom"):
            target = place(f"/dev/{name}", False)
            mount(f"/dev/{name}", target, None, ms["bind"])
            mount(
                None,
                target,
                None,
                ms["remount"]
                | ms["bind"]
                | ms["nosuid"]
                | locked_flags(f"/dev/{name}")
                | (0 if name in ("null", "zero", "full") else ms["rdonly"]),
            )
        mount("proc", place("/proc", True), "proc", ms["nosuid"] | ms["nodev"] | ms["noexec"])
        # the scratch folder: the only writable place, a size-capped tmpfs that vanishes with the namespace
        owner = config["uid"] or 0
        mount(
            "kdagent-scratch",
            place(scratch, True),
            "tmpfs",
            ms["nosuid"] | ms["nodev"],
            f"size={config['scratch_mb']}m,nr_inodes=4096,mode=0700,uid={owner},gid={owner}",
        )
        os.chdir(newroot)
        check(libc.syscall(numbers["pivot_root"], b".", b"."), "pivot_root")  # the old root lies under the new one
        check(libc.umount2(b".", 2), "detach the old root")
        os.chdir("/")
        mount(None, "/", None, ms["remount"] | ms["bind"] | ms["rdonly"] | ms["nosuid"] | ms["nodev"])
        check(libc.sethostname(b"sandbox", 7), "sethostname")  # the UTS namespace's own: not this machine's name
        layers.append("namespaces(mount,pid,net,ipc,uts" + (",user)" if config["user_ns"] else ")"))
        layers.append("minimal read-only root")

        with open("/proc/sys/kernel/cap_last_cap") as f:
            last_cap = int(f.read())
        for cap in range(last_cap + 1):  # the bounding set: an exec as uid 0 gains nothing
            check(libc.prctl(24, cap, 0, 0, 0), "drop capability")  # PR_CAPBSET_DROP
        if config["uid"] is not None:
            os.setgroups([])
            os.setresgid(config["uid"], config["uid"], config["uid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])  # clears every capability
            layers.append(f"uid {config['uid']}")
        else:
            check(libc.prctl(28, 0x2F, 0, 0, 0), "securebits")  # PR_SET_SECUREBITS: noroot, no fixup, locked
            header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
            check(libc.syscall(numbers["capset"], header, (ctypes.c_uint32 * 6)()), "capset")  # all zero
            layers.append("no capabilities")
        prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
        prctl(1, 9)  # PR_SET_PDEATHSIG SIGKILL (a uid change clears it, so set it after)
        layers.append("no_new_privs")

        abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
        if abi >= 1:
            fs_all = (1 << {1: 13, 2: 14}.get(abi, 15 if abi < 5 else 16)) - 1
            net = 3 if abi >= 4 else 0  # bind and connect TCP: none allowed
            scoped = 3 if abi >= 6 else 0  # abstract Unix sockets and signals outside the domain
            attr = (ctypes.c_uint64 * 3)(fs_all, net, scoped)
            ruleset = check(
                libc.syscall(444, attr, 8 * (3 if abi >= 6 else 2 if abi >= 4 else 1), 0), "landlock ruleset"
            )
            read = 1 | 4 | 8  # execute, read file, read dir
            file_rights = 1 | 2 | 4 | (1 << 14 if abi >= 3 else 0)  # execute, write, read, truncate
            for path, rights in (("/", read), (scratch, fs_all), ("/dev/null", file_rights & ~1)):
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                rule = (ctypes.c_uint8 * 12).from_buffer_copy(
                    rights.to_bytes(8, "little") + fd.to_bytes(4, "little", signed=True)
                )
                check(libc.syscall(445, ruleset, 1, rule, 0), f"landlock rule {path}")
                os.close(fd)
            check(libc.syscall(446, ruleset, 0), "landlock restrict")
            os.close(ruleset)
            layers.append(f"landlock abi {abi}")

        if platform.machine() == "x86_64":
            deny = [
                101,
                310,
                311,
                248,
                249,
                250,
                321,
                298,
                323,
                425,
                426,
                427,
                165,
                166,
                155,
                272,
                308,
                161,
                246,
                320,
                175,
                313,
                176,
                303,
                304,
                428,
                429,
                430,
                431,
                432,
                433,
                442,
                135,
                163,
                167,
                168,
                169,
                164,
                227,
                179,
                172,
                173,
                447,
                438,
                134,
                139,
                156,
                170,
                171,
            ]
            ld, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
            allow, eperm, enosys, kill = 0x7FFF0000, 0x00050001, 0x00050026, 0x80000000
            prog = [
                (ld, 0, 0, 4),
                (jeq, 1, 0, 0xC000003E),
                (ret, 0, 0, kill),
                (ld, 0, 0, 0),
                (jge, 0, 1, 0x40000000),
                (ret, 0, 0, kill),
                (jeq, 0, 1, 435),
                (ret, 0, 0, enosys),
                (jeq, 0, 3, 56),
                (ld, 0, 0, 16),
                (jset, 0, 1, 0x7E020080),
                (ret, 0, 0, eperm),
                (ld, 0, 0, 0),
            ]
            for nr in deny:
                prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
            prog.append((ret, 0, 0, allow))

            class Filter(ctypes.Structure):
                _fields_ = [
                    ("code", ctypes.c_uint16),
                    ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32),
                ]

            class Program(ctypes.Structure):
                _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

            filters = (Filter * len(prog))(*[Filter(*f) for f in prog])
            check(
                libc.prctl(22, 2, ctypes.byref(Program(len(prog), filters)), 0, 0), "seccomp"
            )  # PR_SET_SECCOMP, FILTER
            layers.append("seccomp")
    except Exception as exc:  # noqa: BLE001 - any failure here is reported as the isolation that failed
        os.write(report_fd, f"isolation failed: {getattr(exc, 'strerror', None) or exc}\n".encode())
        os._exit(4)
    os.write(report_fd, ("isolation: " + ", ".join(layers) + "\n").encode())
    os.chdir(scratch)
    os.execve(config["argv"][0], config["argv"], config["env"])


def plan_paths(python: str) -> tuple[list[str], list[str]]:
    """(read-only paths, hidden paths) of the code's root for `python`: the interpreter, its standard
    library (site-packages hidden), libpython, the system's shared libraries."""
    import json
    import os
    import subprocess

    probe = (
        "import json, sys, sysconfig; v = sysconfig.get_config_var; p = sysconfig.get_paths()\n"
        "print(json.dumps([sys.executable, p['stdlib'], p['platstdlib'], p['purelib'], p['platlib'], v('LIBDIR') or '', v('INSTSONAME') or '']))"
    )
    exe, stdlib, platstdlib, purelib, platlib, libdir, soname = json.loads(
        subprocess.run([python, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True, timeout=30).stdout
    )
    read_only = [
        "/lib",
        "/lib64",
        "/lib32",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib32",
        os.path.realpath(exe),
        stdlib,
        platstdlib,
    ]
    if libdir and soname and os.path.exists(os.path.join(libdir, soname)):
        read_only.append(os.path.realpath(os.path.join(libdir, soname)))
    hidden = [p for p in dict.fromkeys([purelib, platlib]) if p.startswith((stdlib + "/", platstdlib + "/"))]
    return list(dict.fromkeys(read_only)), hidden
