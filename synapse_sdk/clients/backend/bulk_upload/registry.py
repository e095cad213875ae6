"""``UploadStrategyRegistry``: strategy classes by name, and the one that serves a storage provider.

One registry per process (``get_strategy_registry()``), holding classes, not
instances; the presigned strategy is registered when this module loads.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synapse_sdk.clients.backend.bulk_upload.base import BulkUploadStrategy

__all__ = ["UploadStrategyRegistry", "get_strategy_registry"]


class UploadStrategyRegistry:
    """Registered bulk upload strategy classes; a singleton, as in synapse-sdk."""

    _instance: UploadStrategyRegistry | None = None

    def __new__(cls) -> UploadStrategyRegistry:
        if cls._instance is None:
            instance = super().__new__(cls)
            instance._strategies = {}
            cls._instance = instance
        return cls._instance

    _strategies: dict[str, type[BulkUploadStrategy]]

    def register(self, strategy_cls: type[BulkUploadStrategy]) -> None:
        """Register ``strategy_cls`` under its ``strategy_name`` (replacing one of the same name)."""
        name = getattr(strategy_cls, "strategy_name", None)
        if not name:
            raise ValueError(f"{strategy_cls.__name__} must define strategy_name class attribute")
        self._strategies[name] = strategy_cls

    def unregister(self, name: str) -> bool:
        """Remove a strategy; whether it was there."""
        return self._strategies.pop(name, None) is not None

    def get(self, name: str) -> type[BulkUploadStrategy] | None:
        return self._strategies.get(name)

    def get_or_raise(self, name: str) -> type[BulkUploadStrategy]:
        cls = self.get(name)
        if cls is None:
            raise ValueError(f"Strategy '{name}' not found. Available: {list(self._strategies)}")
        return cls

    def create(self, name: str, client: Any) -> BulkUploadStrategy:
        """An instance of the strategy ``name`` for ``client``."""
        return self.get_or_raise(name)(client)

    def select_for_storage(
        self, storage: dict[str, Any], preferred: str | None = None
    ) -> type[BulkUploadStrategy] | None:
        """The strategy class for ``storage``'s provider (``preferred`` first), or None."""
        provider = str(storage.get("provider") or "").lower()
        if preferred:
            cls = self.get(preferred)
            if cls is not None and provider in getattr(cls, "supported_providers", frozenset()):
                return cls
        for cls in self._strategies.values():
            if provider in getattr(cls, "supported_providers", frozenset()):
                return cls
        return None

    def select_for_storage_or_raise(
        self, storage: dict[str, Any], preferred: str | None = None
    ) -> type[BulkUploadStrategy]:
        cls = self.select_for_storage(storage, preferred)
        if cls is None:
            provider = storage.get("provider", "unknown")
            raise ValueError(
                f"No strategy supports provider '{provider}'. Available strategies: {list(self._strategies)}"
            )
        return cls

    def list_strategies(self) -> list[str]:
        return list(self._strategies)

    def list_strategy_classes(self) -> list[type[BulkUploadStrategy]]:
        return list(self._strategies.values())

    def clear(self) -> None:
        """Forget every strategy (for tests)."""
        self._strategies.clear()


@functools.lru_cache(maxsize=1)
def get_strategy_registry() -> UploadStrategyRegistry:
    """The process's registry."""
    return UploadStrategyRegistry()


def _register_default_strategies() -> None:
    from synapse_sdk.clients.backend.bulk_upload.strategies.presigned import PresignedUploadStrategy

    get_strategy_registry().register(PresignedUploadStrategy)


_register_default_strategies()
