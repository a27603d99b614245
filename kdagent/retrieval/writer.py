"""The one-writer rule of a Chroma store: one process writes a collection at a time, a second gets a UserError.

An embedded store takes an flock beside its files (the kernel drops it when the process dies). A Chroma server
has no shared folder, so the lock is a record of the server's `kdagent-writers` collection, keyed by the
collection's name, holding a random token, the holder's host and pid, and a lease. Chroma's `add` keeps the
first record of an id and ignores later ones, so of two processes adding at once one wins, and each reads the
record back to learn which. The holder renews its lease every `lease_s / 3` seconds from a daemon thread; a
writer that died leaves a lease that runs out (or, on the same host, a pid that is gone), and the next writer
deletes that record (a delete conditioned on its token, so a fresh lock is never deleted) and takes it.
"""

import fcntl
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from kdagent.errors import UserError

LOCKS = "kdagent-writers"


def _refused(where: str, holder: str = "") -> UserError:
    return UserError(
        f"Chroma store {where} is being written by another process{holder}; wait for it or use another store"
    )


def _dead_here(record: dict) -> bool:
    """The lock's holder ran on this host and its process is gone (a run killed and resumed at once)."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class FileWriterLock:
    def __init__(self, folder: Path, collection: str):
        self.folder, self.collection, self._fh = folder, collection, None

    def acquire(self) -> None:
        if self._fh is not None:
            return
        fh = open(self.folder / f".kdagent-writer-{self.collection}.lock", "w")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise _refused(str(self.folder)) from None
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class ServerWriterLock:
    def __init__(self, client, collection: str, where: str, lease_s: float = 30.0):
        self.locks = client.get_or_create_collection(name=LOCKS, embedding_function=None)
        self.collection, self.where, self.lease_s = collection, where, lease_s
        self.token = uuid.uuid4().hex
        self._held = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> dict | None:
        got = self.locks.get(ids=[self.collection], include=["metadatas"])
        return got["metadatas"][0] if got["ids"] else None

    def _mine(self) -> dict:
        return {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": time.time() + self.lease_s,
        }

    def acquire(self) -> None:
        """Before each write: take the lock, or make sure it is still this process's."""
        record = self._record()
        if self._held:
            if record is not None and record.get("token") == self.token:
                return
            self._held = False  # lost: this process stalled past its lease and another took it
            self._stop.set()
        if record is not None and record.get("token") != self.token:
            if record.get("expires", 0) > time.time() and not _dead_here(record):
                raise _refused(self.where, f" (pid {record.get('pid')} on {record.get('host')})")
            self.locks.delete(ids=[self.collection], where={"token": record["token"]})  # its writer died
        self.locks.add(ids=[self.collection], embeddings=[[1.0]], documents=[self.collection], metadatas=[self._mine()])
        record = self._record()  # the first add of an id wins; the others are ignored
        if record is None or record.get("token") != self.token:
            holder = f" (pid {record.get('pid')} on {record.get('host')})" if record else ""
            raise _refused(self.where, holder)
        self._held = True
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="kdagent-chroma-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                record = self._record()
                if record is None or record.get("token") != self.token:
                    return  # lost (this process stalled past its lease): the next write finds out
                self.locks.update(ids=[self.collection], metadatas=[self._mine()])
            except Exception:
                pass  # the server is briefly away; the lease outlives a missed renewal

    def check(self) -> None:
        """Before each write: the lock is still this process's."""
        record = self._record()
        if record is None or record.get("token") != self.token:
            self._held = False
            self._stop.set()
            self.acquire()

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        self.locks.delete(ids=[self.collection], where={"token": self.token})
        self._held = False
