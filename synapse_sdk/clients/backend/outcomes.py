"""What a batch upload returns: one typed ``FileOutcome`` per file, gathered in a ``BatchResult``.

A ``BatchResult`` *is* the dict the documentation shows (``{"successful",
"failed", "skipped", "total"}``, each entry ``{"file_path", "status",
"result" | "error" | "checksum"}`` with ``"error"`` as ``"Type: message"``),
so code written against that shape keeps working; beside it,
``result.outcomes`` keeps what the strings lose: the exception object itself,
with the upload's ``url`` and ``offset`` to resume from. This module holds
data only: it uploads nothing.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

__all__ = ["BatchResult", "FileOutcome", "Status"]

Status = Literal["success", "failed", "skipped"]


@dataclass(frozen=True)
class FileOutcome:
    """How one file of a batch ended.

    ``status`` is ``"success"`` (``result``: the server's record of the
    upload), ``"failed"`` (``error``: the exception, with ``url`` and
    ``offset`` when the server had started the upload) or ``"skipped"``
    (``checksum``: the MD5 the server already holds). ``duplicate_of`` names
    the identical file of the batch that was uploaded in this one's stead.
    Reading it like the documentation's dict entry (``outcome["error"]``)
    works too.
    """

    path: Path
    status: Status
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    checksum: str | None = None
    duplicate_of: Path | None = None
    url: str | None = None
    offset: int | None = None

    @classmethod
    def success(cls, path: Path, result: dict[str, Any]) -> FileOutcome:
        return cls(Path(path), "success", result=result, url=result.get("url") if isinstance(result, dict) else None)

    @classmethod
    def failure(cls, path: Path, error: BaseException) -> FileOutcome:
        """The outcome of a file that failed with ``error``; its ``url``/``offset`` (a ``ClientError``'s) come along."""
        return cls(
            Path(path), "failed", error=error, url=getattr(error, "url", None), offset=getattr(error, "offset", None)
        )

    @classmethod
    def skipped(cls, path: Path, checksum: str) -> FileOutcome:
        return cls(Path(path), "skipped", checksum=checksum)

    @property
    def ok(self) -> bool:
        """Whether the file is on the server (uploaded or already there)."""
        return self.status != "failed"

    @property
    def error_text(self) -> str | None:
        """The error as the documentation's entry shows it: ``"Type: message"``."""
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def as_copy_of(self, path: Path, original: Path) -> FileOutcome:
        """This outcome for ``path``, a file identical to ``original`` (this one's file)."""
        return replace(self, path=Path(path), duplicate_of=Path(original))

    def as_dict(self) -> dict[str, Any]:
        """The documentation's entry: ``{"file_path", "status", "result" | "error" | "checksum"[, "duplicate_of"]}``."""
        entry: dict[str, Any] = {"file_path": self.path, "status": self.status}
        if self.status == "success":
            entry["result"] = self.result
        elif self.status == "failed":
            entry["error"] = self.error_text
        else:
            entry["checksum"] = self.checksum
        if self.duplicate_of is not None:
            entry["duplicate_of"] = self.duplicate_of
        return entry

    # Read like the dict entry it replaces.
    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def portable(self) -> FileOutcome:
        """This outcome with an error that pickles (to cross a process), else a ``RuntimeError`` saying the same."""
        if self.error is None:
            return self
        try:
            pickle.loads(pickle.dumps(self.error))
        except Exception:
            return replace(self, error=RuntimeError(self.error_text))
        return self


class BatchResult(dict):
    """The documentation's ``{"successful", "failed", "skipped", "total"}`` dict, and the typed outcomes behind it.

    ``outcomes`` lists every file's ``FileOutcome`` in the order the files
    were given; ``failures`` those that failed. The dict's entries are plain
    dicts made from them once, so code that annotates them (``entry["x"] =``)
    keeps its notes.
    """

    outcomes: tuple[FileOutcome, ...]

    def __init__(self, outcomes: Iterable[FileOutcome]) -> None:
        outcomes = tuple(outcomes)
        entries = [outcome.as_dict() for outcome in outcomes]
        super().__init__(
            successful=[e for e in entries if e["status"] == "success"],
            failed=[e for e in entries if e["status"] == "failed"],
            skipped=[e for e in entries if e["status"] == "skipped"],
            total=len(outcomes),
        )
        self.outcomes = outcomes

    @property
    def failures(self) -> tuple[FileOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.status == "failed")

    @property
    def ok(self) -> bool:
        """Whether no file failed."""
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the documented shape (e.g. to serialise)."""
        return copy.deepcopy(dict(self))
