"""One driver per campaign: the lease (``paths.lease``).

The same mechanism, at another ``Site``, is the per-unit claim across campaigns
(``orchestrator/claims.py``): ``take(store, site)``.

``lth run`` takes the campaign's lease before it writes anything a driver owns (its driver
record, markers, commits) and keeps it until it ends, renewing a heartbeat every
``HEARTBEAT_S``. A second ``lth run`` of the same campaign on the same store refuses,
naming the holder's host, pid and since when; so the compute never doubles and the driver
is the only committer (``orchestrator/committer.py`` checks the lease before every commit
and stops if it was taken over).

A dead driver's lease is taken over by the next ``lth run``: at once when the holder ran on
this host and its process is gone (pid and process start time, so a recycled pid does not
count as alive); after ``STALE_AFTER_S`` without a heartbeat when it ran on another host
(``LTH_LEASE_STALE_S`` overrides it).

Mutual exclusion: on a local or NFS store every change of the lease file (publish, take
over, heartbeat, release) happens under an exclusive ``flock`` of a lock file beside it (the
kernel drops it when its holder dies), and a driver replaces the lease only if it is still the
one it judged absent or dead; two drivers starting or taking over at the same moment cannot
both win (a rename-then-link scheme let a third taker in while the file was moved away). An object
store (S3) has no such primitive in pyarrow: there the driver writes its lease, waits
``SETTLE_S`` and reads it back, and holds it only if it still names this driver (the last
writer wins; a driver that lost the race refuses).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from orchestrator import paths
from orchestrator.store import Store, StoreError

HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0  # a holder on another host is dead after this long without a heartbeat
SETTLE_S = 1.0  # object stores: wait before reading the lease back


class LeaseHeld(RuntimeError):
    """Another live driver holds the campaign."""


class LeaseLost(RuntimeError):
    """This driver's lease was taken over (it was thought dead): it must stop committing."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may contain spaces


def pid_alive(pid: int, started: str | None) -> bool:
    """Process ``pid`` of this host exists and (when known) started at ``started``."""
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = proc_start(pid)
    return not (started and now and started != now)


@dataclass(frozen=True)
class LeaseRecord:
    host: str
    pid: int
    run_id: str
    since: str  # ISO time (UTC) the lease was taken
    heartbeat: str  # ISO time (UTC) of the last renewal
    proc_start: str | None = None

    @classmethod
    def mine(cls) -> LeaseRecord:
        t = _now().isoformat()
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:12], t, t, proc_start(os.getpid()))

    @classmethod
    def from_json(cls, data: object) -> LeaseRecord | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["host"]), int(data["pid"]), str(data["run_id"]), str(data["since"]),
                       str(data["heartbeat"]), data.get("proc_start"))
        except (KeyError, TypeError, ValueError):
            return None

    def age(self) -> float:
        """Seconds since the last heartbeat."""
        return (_now() - dt.datetime.fromisoformat(self.heartbeat)).total_seconds()

    def alive(self, stale_after: float) -> bool:
        if self.host == socket.gethostname():
            return pid_alive(self.pid, self.proc_start)
        return self.age() < stale_after

    def describe(self) -> str:
        return (f"host {self.host}, pid {self.pid}, since {self.since[:19]} UTC "
                f"(last heartbeat {self.age():.0f} s ago, run {self.run_id})")


def stale_after() -> float:
    value = os.environ.get("LTH_LEASE_STALE_S")
    if value is None:
        return STALE_AFTER_S
    try:
        return float(value)
    except ValueError:
        raise StoreError(f"LTH_LEASE_STALE_S: expected a number of seconds, got {value!r}") from None


@dataclass(frozen=True)
class Site:
    """Where a lease lives: its file, the lock file serialising its changes, what it guards."""

    path: str
    lock: str
    what: str  # for messages: "campaign 'x'", "unit d-..."

    @classmethod
    def of(cls, campaign: str) -> Site:
        """The campaign's lease: one driver per campaign."""
        return cls(paths.lease(campaign), paths.lease_lock(campaign), f"campaign {campaign!r}")


def read(store: Store, campaign: str | Site) -> LeaseRecord | None:
    """The lease (of a campaign, or at a ``Site``) as stored (None: none, or unreadable)."""
    site = campaign if isinstance(campaign, Site) else Site.of(campaign)
    try:
        return LeaseRecord.from_json(store.get_json(site.path))
    except StoreError:
        return None


class Lease:
    """A held lease; renews its heartbeat from a daemon thread until ``release``."""

    def __init__(self, store: Store, site: Site, record: LeaseRecord):
        self.store, self.site, self.record = store, site, record
        self.lost: str | None = None  # why the heartbeat found the lease gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{site.what}", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise ``LeaseLost`` unless the stored lease is still this driver's."""
        current = read(self.store, self.site)
        if current is None or current.run_id != self.record.run_id:
            who = current.describe() if current else "nobody (the lease file is gone)"
            raise LeaseLost(f"{self.site.what}: this driver's lease was taken over by {who}; "
                            "stopping before the next commit")

    def renew(self) -> None:
        with _exclusive(self.store, self.site):  # no takeover between the check and the write
            self.check()
            self.record = LeaseRecord(**{**asdict(self.record), "heartbeat": _now().isoformat()})
            self.store.put_json(self.site.path, asdict(self.record))

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.renew()
            except LeaseLost as e:
                self.lost = str(e)
                return
            except OSError:  # a store hiccup: the next beat tries again (stale only after STALE_AFTER_S)
                continue

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still ours."""
        self._stop.set()
        self._thread.join()
        with _exclusive(self.store, self.site):
            current = read(self.store, self.site)
            if current is not None and current.run_id == self.record.run_id:
                self.store.delete(self.site.path)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(store: Store, campaign: str) -> Lease:
    """Take the campaign's lease, or raise ``LeaseHeld`` naming the live holder."""
    limit = stale_after()
    return take(store, Site.of(campaign), held=lambda current: (
        f"campaign {campaign!r} in {store.uri} is being run by another driver: {current.describe()}. "
        f"Wait for it to finish (`lth status` shows its progress); a driver that died is taken over "
        f"by the next `lth run`: at once on its own host, after {limit:.0f} s without a heartbeat "
        "from another host (LTH_LEASE_STALE_S)"))


def take(store: Store, site: Site, held=None) -> Lease:
    """Take the lease at ``site`` (absent, or left by a dead holder), or raise ``LeaseHeld``
    (``held(record)``: its message; by default it names the live holder)."""
    limit = stale_after()
    for _ in range(5):  # a few rounds of losing a race to a taker that then died are enough
        current = read(store, site)
        if current is not None and current.alive(limit):
            raise LeaseHeld(held(current) if held else f"{site.what} is held by {current.describe()}")
        mine = LeaseRecord.mine()
        if _publish(store, site, mine, current):
            return Lease(store, site, mine)
    raise LeaseHeld(f"{site.what}: could not take the lease (other holders kept taking it)")


@contextlib.contextmanager
def _exclusive(store: Store, site: Site):
    """Hold the lease's lock file (local / NFS stores; a no-op on object stores)."""
    if not isinstance(store.fs, pafs.LocalFileSystem):
        yield
        return
    lock_path = store.full(site.lock)
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released on close, or by the kernel if this process dies
        yield


def _publish(store: Store, site: Site, mine: LeaseRecord, dead: LeaseRecord | None) -> bool:
    """Write ``mine`` as the lease unless another driver got there first; True if held."""
    data = json.dumps(asdict(mine), sort_keys=True, indent=1).encode()
    if isinstance(store.fs, pafs.LocalFileSystem):
        with _exclusive(store, site):
            there = read(store, site)
            if (there.run_id if there else None) != (dead.run_id if dead else None):
                return False  # another driver published or took over since the caller looked
            final = store.full(site.path)
            tmp = f"{final}.new-{mine.run_id}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, final)  # atomic: readers see the old lease or the new one, whole
            return True
    store.put_bytes(site.path, data)
    time.sleep(SETTLE_S)
    back = read(store, site)
    return back is not None and back.run_id == mine.run_id
