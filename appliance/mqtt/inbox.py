"""The signed commands waiting for the command thread, bounded in count and bytes.

Only messages whose signature checked out get here (the network thread checks it), so a flood
from a stranger never queues; a signed command that finds no room is answered `busy`.
"""

import collections
import threading
from typing import Any, Deque, Optional, Tuple


class Inbox:
    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count, self.max_bytes = max_count, max_bytes
        self._items: Deque[Tuple[Any, int]] = collections.deque()
        self._bytes = 0
        self._closed = False
        self._ready = threading.Condition()

    def put(self, item: Any, size: int) -> bool:
        """Queue `item`; False (nothing queued) when it would pass either bound."""
        with self._ready:
            if self._closed or len(self._items) >= self.max_count or self._bytes + size > self.max_bytes:
                return False
            self._items.append((item, size))
            self._bytes += size
            self._ready.notify()
            return True

    def get(self) -> Optional[Any]:
        """The next item, waiting for one; None once closed."""
        with self._ready:
            while not self._items and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            item, size = self._items.popleft()
            self._bytes -= size
            return item

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
