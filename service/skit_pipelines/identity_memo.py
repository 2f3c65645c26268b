"""A bounded memo of a function of frozen values, looked up by identity."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_SIZE = 4096
"""The memos' size unless told otherwise: a few thousand steps, those of the runs in flight."""


class IdentityMemo(Generic[K, V]):
    """`compute(key)`, remembered for the last `size` keys used.

    For the values a run's revisions share: a change replaces one step and keeps the
    others, the same frozen objects, so what was computed from them for one revision
    holds for the next. Looked up by identity, since a Step's mappings make it
    unhashable; an entry holds its key, so the id is not reused while remembered.
    """

    def __init__(self, compute: Callable[[K], V], size: int) -> None:
        self._compute = compute
        self._size = size
        self._entries: OrderedDict[int, tuple[K, V]] = OrderedDict()

    def __call__(self, key: K) -> V:
        ident = id(key)
        entry = self._entries.get(ident)
        if entry is not None:
            self._entries.move_to_end(ident)
            return entry[1]
        value = self._compute(key)
        self._entries[ident] = (key, value)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value
