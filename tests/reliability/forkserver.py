"""A fork server for the kill tests: import kdagent's heavy libraries once, then fork one child per
`kdagent` command line, so that twenty SIGKILLed runs do not pay twenty interpreter starts.

The child is an ordinary `kdagent` process: it runs `kdagent.cli.main(args)`, the same entry point as
`.venv/bin/kdagent`, with its stdout and stderr in files. The test kills it from outside with
`os.kill(pid, SIGKILL)`. The server itself never runs torch code (no thread pools before the fork).

Protocol, one JSON object a line on stdin/stdout: {"op": "run", "args": [...], "log": path} -> {"pid": n};
{"op": "wait", "pid": n} -> {"rc": exit code, negative for a signal}.
"""

import json
import os
import sys
import threading


def _warm() -> None:
    import chromadb  # noqa: F401
    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401  (the embedder)
    import transformers.models.llama.modeling_llama  # noqa: F401
    from trl import SFTTrainer  # noqa: F401

    import kdagent.cli  # noqa: F401
    import kdagent.loop.runner  # noqa: F401


def _child(args: list[str], log: str) -> None:
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        from kdagent.cli import main

        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    _warm()
    assert threading.active_count() == 1, "a thread started before the fork"
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "run":
            pid = os.fork()
            if pid == 0:
                _child(request["args"], request["log"])
            print(json.dumps({"pid": pid}), flush=True)
        elif request["op"] == "wait":
            _, status = os.waitpid(request["pid"], 0)
            print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


class ForkServer:
    """The test's side: start the server, run `kdagent` commands in forked children, reap them."""

    def __init__(self, env: dict | None = None):
        import subprocess

        full = dict(os.environ)
        full.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=full
        )
        if not json.loads(self.proc.stdout.readline() or "{}").get("ready"):
            raise RuntimeError("the fork server did not start")

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def start(self, args: list[str], log) -> int:
        return self._ask({"op": "run", "args": [str(a) for a in args], "log": str(log)})["pid"]

    def wait(self, pid: int) -> int:
        return self._ask({"op": "wait", "pid": pid})["rc"]

    def run(self, args: list[str], log) -> int:
        return self.wait(self.start(args, log))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def alive(pid: int) -> bool:
    """True while the child runs (a zombie, dead but not yet reaped, is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def open_files(pid: int) -> list[str]:
    out = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    except OSError:
        pass
    return out


if __name__ == "__main__":
    main()
