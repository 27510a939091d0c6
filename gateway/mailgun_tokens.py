"""Token-replay rejection for Mailgun, whose HMAC covers timestamp + token but not the body:
a captured signature block could carry a forged body. Each token is accepted once.

The cache is bounded. To stay safe when it is full, evicting a token raises a horizon:
tokens whose timestamp is at or below the newest evicted timestamp are refused as stale,
so every token that can still be accepted is one the cache remembers. Under a flood, old
retries are refused (they get 401 and retry until the window ends) instead of replays
being let through.
"""

from __future__ import annotations

import enum
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass


class Check(enum.Enum):
    NEW = "new"              # reserved for this request: write it, then commit or release
    DUPLICATE = "duplicate"  # same token, same body, already written: a retry of ours
    IN_FLIGHT = "in_flight"  # same token and body, another request is writing it now
    REPLAY = "replay"        # same token, different body
    STALE = "stale"          # below the horizon forced by eviction


@dataclass
class _Entry:
    ts: float
    digest: bytes
    committed: bool


class ReplayGuard:
    def __init__(self, max_age_s: float, max_entries: int = 200_000) -> None:
        self._max_age = max_age_s
        self._max = max(1, max_entries)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._horizon = float("-inf")
        self._lock = threading.Lock()

    def reserve(self, token: str, ts: float, body: bytes, now: float) -> Check:
        digest = hashlib.sha256(body).digest()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(token)
            if entry is not None:
                if entry.digest != digest:
                    return Check.REPLAY
                return Check.DUPLICATE if entry.committed else Check.IN_FLIGHT
            if ts <= self._horizon:
                return Check.STALE
            while len(self._entries) >= self._max:
                _, evicted = self._entries.popitem(last=False)
                self._horizon = max(self._horizon, evicted.ts)
            if ts <= self._horizon:  # eviction just raised it past this token
                return Check.STALE
            self._entries[token] = _Entry(ts, digest, committed=False)
            return Check.NEW

    def commit(self, token: str) -> None:
        """The write was acknowledged: later copies are duplicates."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None:
                entry.committed = True

    def release(self, token: str) -> None:
        """The write failed: forget the token so the provider's retry is accepted."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is not None and not entry.committed:
                del self._entries[token]

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        # Tokens past the signature window are refused by the window check anyway;
        # dropping them from the front (roughly oldest first) is enough housekeeping.
        cutoff = now - self._max_age
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.ts >= cutoff or not entry.committed:
                break
            del self._entries[token]

