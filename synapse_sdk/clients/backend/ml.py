"""``MLClientMixin``: models, the model file sent by chunked upload and fetched by ``get_model``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["MLClientMixin"]


class MLClientMixin:
    """Models."""

    def list_models(self, params: dict[str, Any] | None = None) -> Any:
        """One page of models: ``{"count", "next", "previous", "results"}``."""
        return self._get("models/", params=params)

    def get_model(
        self,
        model_id: int,
        *,
        params: dict[str, Any] | None = None,
        url_conversion: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The model, its ``file`` downloaded: a ``Path`` in the SDK's cache folder instead of the URL.

        As in synapse-sdk, ``url_conversion`` defaults to
        ``{"files_fields": ["file"], "is_list": False}``; pass another to
        download other fields or ``coerce`` the paths. The download is
        streamed, resumed if it breaks off, and reused from the cache when
        the same file was fetched before.
        """
        if url_conversion is None:
            url_conversion = {"files_fields": ["file"], "is_list": False}
        return self._get(f"models/{model_id}/", params=params, url_conversion=url_conversion)

    def create_model(self, data: dict[str, Any], *, file: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Create a model; ``file`` (the weights) goes up by chunked upload first.

        As in synapse-sdk, the upload's id is added to ``data`` as ``chunked_upload``.
        """
        if file is not None:
            path = Path(file)
            if not path.exists():
                raise FileNotFoundError(f"Model file not found: {path}")
            data["chunked_upload"] = self.create_chunked_upload(path)["id"]
        return self._post("models/", data=data)
