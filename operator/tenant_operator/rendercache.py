"""A bounded cache of rendered objects per tenant. Rendering is pure, so a
pass over an unchanged tenant may reuse the last result; a drift check of a
quiet tenant renders nothing at all (runtime.py), so only bursts of passes
for the same tenants need it, and the least recently used go first."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

# Tenants: twice the default worker pool. A tenant's passes come in quick
# succession only while it alone is busy (its own writes echo back); in a burst
# of hundreds, its next pass comes after all the others, so no size would hit.
SIZE = 16


class RenderCache:
    def __init__(self, size: int = SIZE):
        self.size = size
        self._entries: OrderedDict[str, tuple[str, list[dict]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: str, key: str, make: Callable[[], list[dict]]) -> list[dict]:
        """The objects rendered for `tenant` at `key` (the model's repr), made once."""
        with self._lock:
            cached = self._entries.get(tenant)
        if cached is None or cached[0] != key:
            cached = (key, make())
        with self._lock:
            self._entries[tenant] = cached
            self._entries.move_to_end(tenant)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return cached[1]

    def forget(self, tenant: str) -> None:
        with self._lock:
            self._entries.pop(tenant, None)

    def __len__(self) -> int:
        return len(self._entries)
