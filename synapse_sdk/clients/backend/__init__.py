"""``BackendClient``: the Synapse backend client, with its upload mixins.

Constructed exactly as synapse-sdk's: ``BackendClient(base_url, access_token,
*, authorization_token=None, tenant=None, agent_token=None, timeout=None)``;
``timeout`` may be the published ``{"connect": 5, "read": 15}`` dict, seconds
for both, a ``(connect, read)`` pair or a ``Timeout``. ``verify`` (TLS:
``True``, ``False`` or a CA bundle path), ``retry`` (a ``RetryPolicy`` for
every request) and ``journal`` (where unfinished uploads are recorded for
resuming: ``True`` for the user's cache folder or ``$SYNAPSE_UPLOAD_JOURNAL``,
a folder, or ``False`` for none) and ``chunk_digest`` (``"md5"``:
``Content-MD5`` per chunk, the default; ``"xxh3"``: the cheaper
``Content-XXH3`` the reference server verifies; ``"none"``) and
``send_whole`` (``True``: a file of at most one chunk goes in one POST with
its MD5, one round trip instead of two; ``False``: a chunk PUT and a
finalize, as synapse-sdk sends every file) and ``parallel_chunks`` (at most
how many chunks of one file travel at once, each on its own connection,
where the server says it takes them out of order; 1: one at a time) are
additions.
``url_host`` (``"internal"``: presigned URLs for consumers inside the
deployment's network) is sent with every request as the ``url_host`` query
parameter, as synapse-sdk does.

Also exported here, where users import the client: ``RetryPolicy`` and
``Timeout`` (the values its arguments take), ``BatchResult`` and
``FileOutcome`` (what ``upload_files`` returns), the executors, and
``upload_file(client, path, url=...)``, one file's upload (resuming from a
failure's ``url``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.journal import Journal, default_journal_dir
from engine.retry import RetryPolicy
from engine.scatter import DEFAULT_PARALLEL_CHUNKS
from engine.timeouts import Timeout, TimeoutLike
from synapse_sdk.clients.backend.batch import LocalExecutor
from synapse_sdk.clients.backend.bulk_upload.mixin import BulkUploadClientMixin
from synapse_sdk.clients.backend.core import CoreClientMixin
from synapse_sdk.clients.backend.data_collection import DataCollectionClientMixin
from synapse_sdk.clients.backend.ml import MLClientMixin
from synapse_sdk.clients.backend.outcomes import BatchResult, FileOutcome
from synapse_sdk.clients.backend.ray_executor import RayExecutor
from synapse_sdk.clients.backend.uploads import upload_file
from synapse_sdk.clients.base import BaseClient

__all__ = [
    "BackendClient",
    "BatchResult",
    "BulkUploadClientMixin",
    "CoreClientMixin",
    "DataCollectionClientMixin",
    "FileOutcome",
    "LocalExecutor",
    "MLClientMixin",
    "RayExecutor",
    "RetryPolicy",
    "Timeout",
    "upload_file",
]


class BackendClient(CoreClientMixin, DataCollectionClientMixin, MLClientMixin, BulkUploadClientMixin, BaseClient):
    """Synchronous client for the Synapse backend API; safe to share between threads."""

    name = "Backend"

    def __init__(
        self,
        base_url: str,
        access_token: str | None = None,
        *,
        authorization_token: str | None = None,
        tenant: str | None = None,
        agent_token: str | None = None,
        timeout: TimeoutLike = None,
        url_host: str | None = None,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        journal: bool | str | os.PathLike[str] = True,
        chunk_digest: str = "md5",
        send_whole: bool = True,
        parallel_chunks: int = DEFAULT_PARALLEL_CHUNKS,
    ) -> None:
        if isinstance(parallel_chunks, bool) or not isinstance(parallel_chunks, int) or parallel_chunks < 1:
            raise ValueError(f"parallel_chunks must be a whole number of at least 1, not {parallel_chunks!r}")
        super().__init__(base_url, timeout=timeout, verify=verify, retry=retry)
        if url_host:
            self.default_params["url_host"] = url_host
        directory = default_journal_dir() if journal is True else Path(journal) if journal else None
        self.journal = None if directory is None else Journal(directory)
        # As given: True means "the default folder" wherever the settings are used.
        self._journal_setting = journal if isinstance(journal, bool) else os.fspath(journal)
        self.chunk_digest = chunk_digest
        self.send_whole = send_whole
        self.parallel_chunks = parallel_chunks
        self.access_token = access_token
        self.authorization_token = authorization_token
        self.tenant = tenant
        self.agent_token = agent_token

    def settings(self) -> dict[str, Any]:
        """This client's constructor arguments as plain, picklable values.

        ``BackendClient(**client.settings())`` builds an equivalent client in
        another process, e.g. a Ray worker, without sending the live one (its
        connection pool does not travel). ``journal=True`` there means that
        process's default journal folder.
        """
        return {
            "base_url": self.base_url,
            "access_token": self.access_token,
            "authorization_token": self.authorization_token,
            "tenant": self.tenant,
            "agent_token": self.agent_token,
            "timeout": dict(self.timeout),
            "url_host": self.default_params.get("url_host"),
            "verify": self.verify if isinstance(self.verify, bool) else os.fspath(self.verify),
            "retry": self.retry,
            "journal": self._journal_setting,
            "chunk_digest": self.chunk_digest,
            "send_whole": self.send_whole,
            "parallel_chunks": self.parallel_chunks,
        }

    def _get_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.access_token:
            headers["Synapse-Access-Token"] = f"Token {self.access_token}"
        if self.authorization_token:
            headers["Authorization"] = f"Token {self.authorization_token}"
        if self.tenant:
            headers["Synapse-Tenant"] = f"Token {self.tenant}"
        if self.agent_token:
            headers["SYNAPSE-Agent"] = f"Token {self.agent_token}"
        return headers

    def __enter__(self) -> BackendClient:
        return self
