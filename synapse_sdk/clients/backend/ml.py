"""``MLClientMixin``: models, with the model file sent by chunked upload."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["MLClientMixin"]


class MLClientMixin:
    """Models."""

    def list_models(self, params: dict[str, Any] | None = None) -> Any:
        return self._get("models/", params=params)

    def get_model(self, model_id: int, *, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._get(f"models/{model_id}/", params=params)

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
