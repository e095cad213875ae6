"""``BaseClient``: base URL, auth headers, timeouts, retries, and one pooled transport per client.

Requests go through ``engine.transport.Transport`` (a thread-safe urllib3
pool, honouring proxies and CA bundles from the environment as requests
does), so one client may be shared by many threads. Every request is retried
by the client's ``RetryPolicy`` (a deadline of time without progress): a
request that must not run twice (a POST that creates) only when it cannot
have been processed. HTTP errors become the ``ClientError`` hierarchy with
the server's ``detail``. This module knows nothing of uploads.
"""

from __future__ import annotations

import json as jsonlib
import math
import mimetypes
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import encode_multipart_formdata
from urllib3.util.retry import Retry

from engine import retry as retrying
from engine.errors import ClientError
from engine.retry import RetryPolicy
from engine.timeouts import Timeout, TimeoutLike
from engine.transport import Response, Transport
from synapse_sdk.utils.file.download import files_url_to_path_from_objs

__all__ = ["BaseClient"]

#: Methods that may be sent twice with the effect of once (RFC 9110).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _file_field(name: str, value: Any) -> tuple[str, bytes, str]:
    """One ``files=`` entry as (filename, content, content type), the ways requests accepts it."""
    if isinstance(value, tuple):
        filename, content = value[0], value[1]
        content_type = value[2] if len(value) > 2 else None
    elif isinstance(value, (str, os.PathLike)):
        filename, content, content_type = Path(value).name, Path(value), None
    else:
        filename, content, content_type = getattr(value, "name", name), value, None
    if isinstance(content, Path):
        content = content.read_bytes()
    elif hasattr(content, "read"):
        content = content.read()
    if isinstance(content, str):
        content = content.encode("utf-8")
    filename = os.path.basename(str(filename))
    content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return filename, bytes(content), content_type


class BaseClient:
    """Shared plumbing of the Synapse clients."""

    name: str | None = None
    page_size: int = 100

    def __init__(
        self,
        base_url: str,
        timeout: TimeoutLike = None,
        *,
        verify: bool | str = True,
        pool_size: int = 16,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        #: A ``Timeout``; it reads as the published ``{"connect": 5, "read": 15}`` dict too.
        self.timeout = Timeout.of(timeout)
        self.default_params: dict[str, str] = {}
        self.retry = retry or RetryPolicy()
        #: How retries wait (tests replace it).
        self.sleep: Callable[[float], None] = time.sleep
        self.verify = verify
        self._session: requests.Session | None = None
        self.transport = Transport(timeout=self.timeout, pool_size=pool_size, verify=verify)

    def _get_headers(self) -> dict[str, str]:
        """Headers for every request; subclasses add authentication."""
        return {}

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _timeout(self, timeout: TimeoutLike) -> Timeout:
        return Timeout.of(timeout, self.timeout)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        files: Mapping[str, Any] | None = None,
        json: Any = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: TimeoutLike = None,
        idempotent: bool | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Send one request, with retries; returns the parsed JSON (or text, or ``None`` for 204).

        ``body`` sends a prepared body as it is (with the caller's headers);
        otherwise ``files`` make a multipart form and ``data``/``json`` JSON.
        ``idempotent`` says whether the request may run twice; by default
        what its method says (a POST may not). ``retry`` replaces the
        client's policy for this request.
        """
        url = self._url(path)
        # A ``next`` URL of a paginated list already carries the default parameters.
        present = {key for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
        query = {**{k: v for k, v in self.default_params.items() if k not in present}, **(params or {})}
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query, doseq=True)
        all_headers = {**self._get_headers(), **(headers or {})}
        if body is None and files:
            fields: dict[str, Any] = {}
            for key, value in (data or {}).items():
                fields[key] = jsonlib.dumps(value) if isinstance(value, dict) else str(value)
            for key, value in files.items():
                fields[key] = _file_field(key, value)
            body, all_headers["Content-Type"] = encode_multipart_formdata(fields)
        elif body is None and (json is not None or data is not None):
            # As synapse-sdk does: a body without files is sent as JSON.
            body = jsonlib.dumps(json if json is not None else data).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        method = method.upper()
        answer = retrying.call(
            lambda: self.transport.request(
                method, url, headers=all_headers, body=body, timeout=self._timeout(timeout)
            ).raise_for_status(),
            retry or self.retry,
            what=f"{method} {url}",
            idempotent=method in IDEMPOTENT_METHODS if idempotent is None else idempotent,
            sleep=self.sleep,
        )
        return _parsed(answer)

    def _get(
        self,
        path: str,
        url_conversion: dict[str, Any] | None = None,
        response_model: Any = None,
        **kwargs: Any,
    ) -> Any:
        """GET ``path``; as synapse-sdk's, with its two optional steps.

        ``url_conversion`` (``{"files_fields": [...], "is_list": bool,
        "coerce": fn}``) downloads the files the answer names by URL into
        the SDK's cache folder and puts their ``Path`` in their place (see
        ``files_url_to_path_from_objs``); with ``is_list`` in the answer's
        ``results``, concurrently. The downloads use this client's pool,
        TLS settings and retry policy. ``response_model`` (a pydantic model)
        validates the answer, which is returned as it is.
        """
        response = self._request("GET", path, **kwargs)
        if url_conversion and isinstance(response, dict):
            conversion = {"files_fields": [], **url_conversion}
            if conversion.get("is_list", False):
                conversion["is_async"] = True  # as synapse-sdk: a page's files concurrently
                objs = response["results"]
            else:
                objs = response
            files_url_to_path_from_objs(objs, **conversion, transport=self.transport, retry=self.retry)
        if response_model is not None:
            return self._validate_response(response, response_model)
        return response

    def _list(
        self,
        path: str,
        url_conversion: dict[str, Any] | None = None,
        list_all: bool = False,
        params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """A paginated list: one page's answer or, with ``list_all``, ``(generator of every result, count)``.

        As synapse-sdk's: the walk follows each page's ``next`` URL, asking
        for ``page_size=self.page_size`` unless ``params`` names one. Its
        options are kept: ``throttle_seconds`` (a pause between pages) and
        ``page_failures`` (a list: a page that fails is recorded there and
        the walk goes on at the next page number, where pages are numbered).
        ``page_retries``/``page_retry_backoff`` are accepted and have nothing
        to add: every page is already retried by this client's policy.
        """
        params = {} if params is None else params
        if not list_all:
            return self._get(path, url_conversion, params=params, **kwargs)
        request_params = {"page_size": self.page_size, **params}
        throttle = float(kwargs.pop("throttle_seconds", 0.0) or 0.0)
        kwargs.pop("page_retries", None)
        kwargs.pop("page_retry_backoff", None)
        page_failures: list[dict[str, Any]] | None = kwargs.pop("page_failures", None)
        if isinstance(kwargs.get("timeout"), dict):
            kwargs["timeout"] = (kwargs["timeout"]["connect"], kwargs["timeout"]["read"])
        first = self._get(path, url_conversion, params=request_params, **kwargs)
        count = first.get("count", 0)
        last_page = _last_page(count, request_params.get("page_size"))

        def walk() -> Iterator[Any]:
            yield from first["results"]
            next_url = first.get("next")
            while next_url:
                if throttle > 0:
                    self.sleep(throttle)
                try:
                    page = self._get(next_url, url_conversion, **kwargs)
                except ClientError as error:
                    if page_failures is None:
                        raise
                    page_failures.append(
                        {"page": _page_number(next_url), "url": next_url, "error": f"{type(error).__name__}: {error}"}
                    )
                    next_url = _page_after(next_url, last_page)
                    continue
                yield from page["results"]
                next_url = page.get("next")

        return walk(), count

    def _list_all(
        self,
        path: str,
        url_conversion: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """Every result of a paginated list, page by page (following ``next``), as a generator."""
        request_params = {"page_size": self.page_size, **(params or {})}
        page = self._get(path, url_conversion, params=request_params, **kwargs)
        while True:
            yield from page["results"]
            next_url = page.get("next")
            if not next_url:
                return
            page = self._get(next_url, url_conversion, **kwargs)

    def exists(self, api: str, *args: Any, **kwargs: Any) -> bool:
        """Whether the list method named ``api`` (e.g. ``"list_models"``) finds anything: its ``count`` > 0."""
        method = getattr(self, api, None)
        if not callable(method):
            raise AttributeError(f"{type(self).__name__} has no method {api!r} to ask")
        return method(*args, **kwargs)["count"] > 0

    def _post(self, path: str, request_model: Any = None, response_model: Any = None, **kwargs: Any) -> Any:
        return self._mutate("POST", path, request_model, response_model, **kwargs)

    def _put(self, path: str, request_model: Any = None, response_model: Any = None, **kwargs: Any) -> Any:
        return self._mutate("PUT", path, request_model, response_model, **kwargs)

    def _patch(self, path: str, request_model: Any = None, response_model: Any = None, **kwargs: Any) -> Any:
        return self._mutate("PATCH", path, request_model, response_model, **kwargs)

    def _delete(self, path: str, request_model: Any = None, response_model: Any = None, **kwargs: Any) -> Any:
        return self._mutate("DELETE", path, request_model, response_model, **kwargs)

    def _mutate(self, method: str, path: str, request_model: Any, response_model: Any, **kwargs: Any) -> Any:
        """A request with a body, checked against pydantic models before it goes and after it comes, as published."""
        if kwargs.get("data") and request_model is not None:
            kwargs["data"] = self._validate_request(kwargs["data"], request_model)
        answer = self._request(method, path, **kwargs)
        return answer if response_model is None else self._validate_response(answer, response_model)

    @staticmethod
    def _validate_request(data: Any, model: Any) -> dict[str, Any]:
        """``data`` as the model validates it, without its ``None`` fields (pydantic's ``ValidationError`` if bad)."""
        if not hasattr(model, "model_validate"):
            raise TypeError(f"{getattr(model, '__name__', model)!r} is not a pydantic model")
        return {k: v for k, v in model.model_validate(data).model_dump().items() if v is not None}

    @staticmethod
    def _validate_response(answer: Any, model: Any) -> Any:
        """The answer unchanged, once the model accepts it."""
        if not hasattr(model, "model_validate"):
            raise TypeError(f"{getattr(model, '__name__', model)!r} is not a pydantic model")
        model.model_validate(answer)
        return answer

    @property
    def requests_session(self) -> requests.Session:
        """A requests session for calls this client does not wrap, as synapse-sdk offers one.

        Like the published one it carries no authentication (pass
        ``headers=client._get_headers()``) and retries 502/503/504 three
        times; it verifies TLS as this client does. The client's own
        requests do not use it.
        """
        if self._session is None:
            session = requests.Session()
            session.verify = self.verify
            retries = Retry(
                total=3,
                backoff_factor=2,
                status_forcelist=[502, 503, 504],
                allowed_methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                respect_retry_after_header=True,
            )
            for scheme in ("http://", "https://"):
                session.mount(scheme, HTTPAdapter(max_retries=retries))
            self._session = session
        return self._session

    def reset_connection(self) -> None:
        """Drop every open connection; the next request opens a new one (a retry that reuses a bad one fails alike)."""
        self.transport.close()
        if self._session is not None:
            self._session.close()
            self._session = None

    def close(self) -> None:
        """Close the pooled connections."""
        self.reset_connection()

    def __enter__(self) -> BaseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parsed(answer: Response) -> Any:
    """The answer's JSON (or text, as synapse-sdk returns it); ``None`` for 204."""
    return None if answer.status == 204 else answer.detail


def _last_page(count: Any, page_size: Any) -> int | None:
    """The number of a list's last page, when its size can be known."""
    try:
        count, page_size = int(count), int(page_size)
    except (TypeError, ValueError):
        return None
    return max(1, math.ceil(count / page_size)) if page_size > 0 else None


def _page_number(url: str) -> int | None:
    value = dict(parse_qsl(urlsplit(url).query)).get("page", "")
    return int(value) if value.isdigit() else None


def _page_after(url: str, last_page: int | None) -> str | None:
    """The URL of the page after ``url``'s, or None: not numbered (a cursor dies with its page), or the last."""
    number = _page_number(url)
    if number is None or (last_page is not None and number + 1 > last_page):
        return None
    parts = urlsplit(url)
    query = [(k, str(number + 1) if k == "page" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))
