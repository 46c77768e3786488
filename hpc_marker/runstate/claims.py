"""Claims: which task converts which work item, safe on shared parallel filesystems.

Per item a folder `RUN/claims/<item_id>/` holds generation-numbered claim files `gen-<n>`
and, once the item is over, a `done` marker. Every step is one atomic, exclusive filesystem
operation that NFS, Lustre and GPFS honour across nodes: a file is written under a unique
name and hard-linked to its final name (`link` fails if the name exists). No flock, no SQLite.

- Claiming: link `gen-<n+1>` where `gen-<n>` is absent or its lease (mtime) has expired.
  Only one claimant can create a given generation; the newest generation owns the item.
- Heartbeat: the owner refreshes the mtime of the claims it holds; a killed task stops doing
  so and its items are claimed again once `lease_s` has passed.
- Commit: the owner links `done` (holding the item's final manifest record) only while it
  still holds the newest generation; `done` exists at most once, so an item is finished once.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DONE = "done"


@dataclass(frozen=True)
class Claim:
    item_id: str
    generation: int
    path: Path


def _link_exclusive(folder: Path, name: str, content: str) -> bool:
    """Create folder/name with `content` atomically; False if it already exists."""
    tmp = folder / f".tmp-{secrets.token_hex(6)}"
    tmp.write_text(content)
    try:
        os.link(tmp, folder / name)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


class ClaimBoard:
    def __init__(self, folder: Path, owner: str, lease_s: float) -> None:
        self.folder = Path(folder)
        self.owner = owner
        self.lease_s = lease_s
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _item_dir(self, item_id: str) -> Path:
        return self.folder / item_id

    @staticmethod
    def _generations(folder: Path) -> list[int]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(int(n[4:]) for n in names if n.startswith("gen-") and n[4:].isdigit())

    def done_record(self, item_id: str) -> dict | None:
        """The final record of a finished item, or None."""
        try:
            return json.loads((self._item_dir(item_id) / DONE).read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            return {"status": "unknown"}

    def is_done(self, item_id: str) -> bool:
        return (self._item_dir(item_id) / DONE).exists()

    def lease_alive(self, item_id: str, now: float | None = None) -> bool:
        """Someone holds a claim whose lease has not expired."""
        folder = self._item_dir(item_id)
        gens = self._generations(folder)
        if not gens:
            return False
        try:
            mtime = (folder / f"gen-{gens[-1]}").stat().st_mtime
        except FileNotFoundError:
            return False
        return (now if now is not None else time.time()) - mtime < self.lease_s

    def try_claim(self, item_id: str) -> Claim | None:
        if self.is_done(item_id) or self.lease_alive(item_id):
            return None
        folder = self._item_dir(item_id)
        folder.mkdir(parents=True, exist_ok=True)
        gens = self._generations(folder)
        generation = (gens[-1] + 1) if gens else 1
        info = json.dumps({"owner": self.owner, "time": time.time()})
        if not _link_exclusive(folder, f"gen-{generation}", info):
            return None
        claim = Claim(item_id, generation, folder / f"gen-{generation}")
        if self.is_done(item_id):  # finished by its previous owner meanwhile
            claim.path.unlink(missing_ok=True)
            return None
        with self._lock:
            self._held[item_id] = claim
        return claim

    def still_owner(self, claim: Claim) -> bool:
        gens = self._generations(self._item_dir(claim.item_id))
        return bool(gens) and gens[-1] == claim.generation and not self.is_done(claim.item_id)

    def commit(self, claim: Claim, record: dict) -> bool:
        """Mark the item finished with `record`; False if this claim no longer owns it."""
        if not self.still_owner(claim):
            self._forget(claim)
            return False
        ok = _link_exclusive(self._item_dir(claim.item_id), DONE, json.dumps(record, ensure_ascii=False))
        self._forget(claim)
        if ok:
            claim.path.unlink(missing_ok=True)  # a finished item's claims mean nothing any more
        return ok

    def release(self, claim: Claim) -> None:
        """Give the item back at once (no lease to wait for)."""
        if self.still_owner(claim):
            claim.path.unlink(missing_ok=True)
        self._forget(claim)

    def release_all(self) -> None:
        with self._lock:
            claims = list(self._held.values())
        for claim in claims:
            self.release(claim)

    def _forget(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.item_id, None)

    def renew(self) -> None:
        with self._lock:
            claims = list(self._held.values())
        for claim in claims:
            try:
                os.utime(claim.path, None)
            except FileNotFoundError:
                self._forget(claim)

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.lease_s / 4):
                self.renew()

        self._thread = threading.Thread(target=beat, name="claim-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def reopen(self, item_id: str) -> int:
        """Make a finished item claimable again (retry); returns how many times it was reopened."""
        folder = self._item_dir(item_id)
        reopened = sum(1 for n in os.listdir(folder) if n.startswith("done.")) if folder.exists() else 0
        if self.is_done(item_id):
            for generation in self._generations(folder):
                (folder / f"gen-{generation}").unlink(missing_ok=True)
            os.replace(folder / DONE, folder / f"done.{reopened + 1}")
            reopened += 1
        return reopened

    def attempts(self, item_id: str) -> int:
        """How many times the item was finished before (retries)."""
        folder = self._item_dir(item_id)
        return sum(1 for n in os.listdir(folder) if n.startswith("done.")) if folder.exists() else 0
