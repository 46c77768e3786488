"""Claims: which task works on what, and which items are finished, exactly once, on shared filesystems.

Every claim and every commit is one exclusive create (`open` with O_CREAT|O_EXCL), which POSIX
filesystems, Lustre, GPFS and NFS v3 and later perform atomically across nodes, or one rename or
utime. No flock, no SQLite.

- Leases (`claims/<group>/<shard>/<name>`, see lease_shard): a task holds a batch of its share (group: the share's task
  index) or the merge of a split PDF (group: `merge`) by creating the file; it holds it while the
  file's mtime is fresh, and renews it (its heartbeat). A killed holder stops renewing and the
  lease can be taken over once `lease_s` has passed: the taker renames the expired file to
  `<name>.old` (only one taker's rename succeeds) and creates its own. A holder knows it lost a
  lease when the name no longer points at its own file (inode), and stops working on that batch.
  The lease file stays when the batch is over, and its mtime says how: set far in the future
  (FINISHED) when every item is done, set to 0 (expired at once) when the holder gave it back.
  So a batch that was never claimed is the only one whose create succeeds: its holder knows that
  no item of it can be done yet; every other holder checks each item's done marker.
- Done markers (`done/<shard>/<item_id>`): the commit point of one item, holding its final
  manifest record. It exists at most once, so an item is finished once, whoever holds its batch:
  a slow holder whose lease was taken over loses the race at the create and discards its output.
  The record is written and flushed before anything else happens to the item, so a marker that
  cannot be read is a commit cut short by a crash (the collector opens the item again). Shards
  hold at most a thousand documents each, so no folder grows with the size of a run.

Per item a commit is one create; per batch a claim is one create (two operations for a batch
someone else holds or finished), a finish one utime: the same whatever the number of tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

OLD_SUFFIX = ".old"  # where a taken-over lease goes
FINISHED = 4102444800.0  # the mtime of a finished batch's lease: 2100-01-01
BATCH_PREFIX = "b"
SHARD_DOCUMENTS = 1000
LEASES_PER_FOLDER = SHARD_DOCUMENTS  # batches per lease folder (lease_shard)


@dataclass(frozen=True)
class Lease:
    group: str
    name: str
    path: Path
    inode: int


@dataclass(frozen=True)
class Claimed:
    lease: Lease
    fresh: bool  # never claimed before: no item of it can be done yet


def create_exclusive(path: Path, content: str) -> int | None:
    """Create `path` holding `content` (written and flushed) if it does not exist; its inode, or None
    when it existed. The folder is created when missing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return None
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            return None
    try:
        os.write(fd, content.encode("utf-8"))
        os.fsync(fd)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def batch_name(index: int) -> str:
    """The lease name of a share's batch (its group is the share's task index)."""
    return f"{BATCH_PREFIX}{index:05d}"


def lease_shard(name: str) -> str:
    """The folder of a lease inside its group, numbered as done markers are (shard_of): batch b<k> in
    k // 1000, a merge (a document id) by its document. No folder holds more than a few thousand leases
    (and their taken-over `.old` files), however large a share."""
    batch = name[len(BATCH_PREFIX) :]
    return shard_of(batch if name.startswith(BATCH_PREFIX) and batch.isdigit() else name)


def shard_of(item_id: str) -> str:
    """The done-marker folder of an item: its document's number // 1000 ('000123.p004' -> '0000')."""
    doc = item_id.split(".", 1)[0]
    number = int(doc) if doc.isdigit() else zlib.crc32(doc.encode())
    return f"{number // SHARD_DOCUMENTS % 10000:04d}" if doc.isdigit() else f"h{number % 1024:04d}"


class ClaimBoard:
    def __init__(self, root: Path, owner: str, lease_s: float) -> None:
        """`root` is the run folder (claims/ and done/ live in it)."""
        self.root = Path(root)
        self.owner = owner
        self.lease_s = lease_s
        self._held: dict[tuple[str, str], Lease] = {}
        self.released: list[str] = []  # "group/name" of leases given back unfinished: others take them at once
        self._lost: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_beat = None  # called on every heartbeat after the leases are renewed (the task's progress)

    # ---- items ---------------------------------------------------------------------------

    def done_path(self, item_id: str) -> Path:
        return self.root / "done" / shard_of(item_id) / item_id

    def is_done(self, item_id: str) -> bool:
        return self.done_path(item_id).exists()

    def done_record(self, item_id: str) -> dict | None:
        """The final record of a finished item, or None."""
        try:
            return json.loads(self.done_path(item_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            return {"status": "unknown"}

    def commit(self, item_id: str, record: dict) -> bool:
        """Mark the item finished with `record`; False if it already was (by anyone)."""
        return create_exclusive(self.done_path(item_id), json.dumps(record, ensure_ascii=False)) is not None

    def reopen(self, item_id: str, attempt: int) -> bool:
        """Make a finished item claimable again (retry); its record is kept as `<item>.r<attempt>`."""
        path = self.done_path(item_id)
        try:
            os.replace(path, path.with_name(f"{item_id}.r{attempt}"))
            return True
        except FileNotFoundError:
            return False

    # ---- leases --------------------------------------------------------------------------

    def lease_path(self, group: str, name: str) -> Path:
        return self.root / "claims" / group / lease_shard(name) / name

    def make_folder(self, group: str, name: str) -> None:
        """Create the folder of the lease `name` (and its group's) if missing: one mkdir each."""
        path = self.lease_path(group, name).parent
        for folder in (path.parent, path):
            try:
                os.mkdir(folder)
            except FileExistsError:
                pass
            except FileNotFoundError:  # no claims/ folder at all (a run folder made by hand)
                path.mkdir(parents=True, exist_ok=True)
                return

    def names(self, group: str, near: str) -> set[str]:
        """The leases that exist (held, finished, or given back) in the folder of `group` that holds the
        lease `near` (LEASES_PER_FOLDER consecutive batches): one listing."""
        try:
            return set(os.listdir(self.root / "claims" / group / lease_shard(near)))
        except FileNotFoundError:
            return set()

    def holder(self, group: str, name: str) -> str | None:
        """The owner written in a lease (None when there is none, or it cannot be read)."""
        try:
            return json.loads(self.lease_path(group, name).read_text(encoding="utf-8")).get("owner")
        except (FileNotFoundError, json.JSONDecodeError, OSError, AttributeError):
            return None

    def finished(self, group: str, name: str) -> bool:
        try:
            return self.lease_path(group, name).stat().st_mtime >= FINISHED
        except FileNotFoundError:
            return False

    def reopen_finished(self, group: str, name: str) -> None:
        """A finished batch is open again (retry reopened one of its items): its next holder checks each item."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.lease_path(group, name), (0, 0))

    def claim(self, group: str, name: str) -> Claimed | None:
        """Hold `name` (a batch, a merge): a new lease, or one whose holder let it expire or gave it
        back. None when it is finished or held by someone whose lease is alive."""
        path = self.lease_path(group, name)
        content = json.dumps({"owner": self.owner, "time": time.time()})
        inode = create_exclusive(path, content)
        fresh = inode is not None
        if inode is None:
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                mtime = 0.0  # renamed away by a taker just now: try once more
            if mtime >= FINISHED or time.time() - mtime < self.lease_s:
                return None
            with contextlib.suppress(FileNotFoundError):  # expired or given back: only one taker's rename succeeds
                os.replace(path, path.with_name(name + OLD_SUFFIX))
            inode = create_exclusive(path, content)
            if inode is None:
                return None
        lease = Lease(group, name, path, inode)
        with self._lock:
            self._held[(group, name)] = lease
            self._lost.discard((group, name))
        return Claimed(lease, fresh)

    def holds(self, lease: Lease) -> bool:
        """The name still points at this holder's file (nobody took it over)."""
        try:
            return self.lease_path(lease.group, lease.name).stat().st_ino == lease.inode
        except FileNotFoundError:
            return False

    def lost(self, lease: Lease) -> bool:
        """The heartbeat found the lease taken over since it was claimed."""
        with self._lock:
            return (lease.group, lease.name) in self._lost

    def finish(self, lease: Lease) -> None:
        """Mark the leased batch finished (every item of it is done) and let the lease go."""
        self._let_go(lease, FINISHED, only_if_held=False)  # if taken over meanwhile, its taker finds every item done

    def release(self, lease: Lease) -> None:
        """Give the lease back at once (no waiting for it to expire): the next holder checks each item."""
        self._let_go(lease, 0.0, only_if_held=True)

    def _let_go(self, lease: Lease, mtime: float, only_if_held: bool) -> None:
        with self._lock:  # not while the heartbeat renews it
            self._held.pop((lease.group, lease.name), None)
            if only_if_held and not self.holds(lease):
                return
            try:
                os.utime(lease.path, (mtime, mtime))
            except FileNotFoundError:
                return
            if mtime != FINISHED:
                self.released.append(f"{lease.group}/{lease.name}")

    def release_all(self) -> None:
        for lease in self.held():
            self.release(lease)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def renew(self) -> None:
        """Refresh every held lease; forget (and remember as lost) those someone took over."""
        for lease in self.held():
            key = (lease.group, lease.name)
            with self._lock:
                if key not in self._held:
                    continue  # finished or given back meanwhile
                if self.holds(lease):
                    try:
                        os.utime(lease.path, None)
                        continue
                    except FileNotFoundError:
                        pass
                self._held.pop(key, None)
                self._lost.add(key)

    def start_heartbeat(self, interval_s: float | None = None) -> None:
        every = interval_s or self.lease_s / 4

        def beat() -> None:
            while not self._stop.wait(every):
                self.renew()
                if self.on_beat is not None:
                    self.on_beat()

        self._thread = threading.Thread(target=beat, name="claim-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
