"""``Timeout``: how long to wait to connect and to read, as one value.

Users pass timeouts in the forms synapse-sdk and requests accept: a number
(both phases), a ``(connect, read)`` pair, or the client's
``{"connect": ..., "read": ...}`` dict. ``Timeout.of`` turns each into one
frozen value, so the code past the public surface knows a single type. A
``Timeout`` still reads as that dict (``timeout["read"]``, ``dict(timeout)``,
``timeout == {"connect": 5, "read": 15}``), as the published client's
``client.timeout`` does. This module does no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Union

__all__ = ["DEFAULT_TIMEOUT", "Timeout", "TimeoutLike"]

_PHASES = ("connect", "read")


@dataclass(frozen=True, eq=False)
class Timeout(Mapping[str, float]):
    """Seconds to wait for a connection (``connect``) and then for each answer (``read``)."""

    connect: float = 5.0
    read: float = 15.0

    def __post_init__(self) -> None:
        for phase in _PHASES:
            value = getattr(self, phase)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"the {phase} timeout must be a positive number of seconds, not {value!r}")

    @classmethod
    def of(cls, value: TimeoutLike, default: Timeout | None = None) -> Timeout:
        """``value`` as a ``Timeout``: a ``Timeout``, seconds for both, ``(connect, read)`` or the dict.

        ``None`` means ``default`` (or the SDK's 5 s connect, 15 s read).
        """
        if value is None:
            return default if default is not None else DEFAULT_TIMEOUT
        if isinstance(value, Timeout):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(value, value)
        if isinstance(value, Mapping):
            if set(value) != set(_PHASES):
                raise ValueError(f"timeout must have exactly the keys 'connect' and 'read', not {sorted(value)}")
            return cls(value["connect"], value["read"])
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"a timeout pair is (connect, read), not {value!r}")
            return cls(value[0], value[1])
        raise TypeError(
            "timeout must be seconds, a (connect, read) pair, {'connect': ..., 'read': ...} or a Timeout,"
            f" not {value!r}"
        )

    def with_read(self, read: float | None) -> Timeout:
        """This timeout with another read timeout (``None``: unchanged)."""
        return self if read is None else Timeout(self.connect, read)

    def as_tuple(self) -> tuple[float, float]:
        """``(connect, read)``, the form urllib3 and requests take."""
        return (self.connect, self.read)

    # The published client's dict: keys, not the pair, are what iterating gives.
    def __getitem__(self, key: str) -> float:
        if key not in _PHASES:
            raise KeyError(key)
        return float(getattr(self, key))

    def __iter__(self) -> Iterator[str]:
        return iter(_PHASES)

    def __len__(self) -> int:
        return 2

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Timeout):
            return self.as_tuple() == other.as_tuple()
        if isinstance(other, Mapping):
            return dict(self) == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return f"Timeout(connect={self.connect!r}, read={self.read!r})"


DEFAULT_TIMEOUT = Timeout()

#: What a ``timeout=`` argument may be.
TimeoutLike = Union[Timeout, float, tuple[float, float], Mapping[str, float], None]  # noqa: UP007 (a runtime alias on 3.10)
