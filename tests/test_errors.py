"""The error hierarchy: the status-code rule, published names and formats, pickling."""

from __future__ import annotations

import json
import pickle

import pytest

from engine.errors import (
    NO_STATUS,
    CertificateError,
    ClientConnectionError,
    ClientError,
    ClientResponseIncompleteError,
    ClientTimeoutError,
    FileChangedError,
    GpuUnavailableError,
    ProtocolError,
    ServerError,
    UploadCancelled,
    UploadIntegrityError,
    ValidationError,
    error_for_status,
)

pytestmark = pytest.mark.unit

WITHOUT_AN_ANSWER = [
    ProtocolError,
    UploadIntegrityError,
    FileChangedError,
    UploadCancelled,
    CertificateError,
    ClientConnectionError,
    ClientResponseIncompleteError,
]


def documented_handler(error: ClientError) -> str:
    """The status checks of the API documentation's error-handling example, unchanged."""
    if error.status_code == 413:
        return "too large"
    elif error.status_code == 507:
        return "storage full"
    elif error.status_code == 429:
        return "rate limited"
    elif error.status_code >= 500:
        return "server error"
    else:
        return f"client error ({error.status_code})"


@pytest.mark.parametrize("cls", WITHOUT_AN_ANSWER)
def test_errors_without_an_answer_keep_the_documented_pattern_working(cls: type[ClientError]) -> None:
    error = cls("what went wrong")
    assert documented_handler(error) == "client error (None)"
    # Where synapse-sdk has None: equal to it, false, printed as it.
    assert error.status_code == None and not error.status_code  # noqa: E711
    assert repr(error) == f"{cls.__name__}(status_code=None, detail='what went wrong')"
    assert str(error) == "what went wrong"
    assert json.dumps({"status": error.status_code}) == '{"status": 0}'


def test_no_status_equals_only_none() -> None:
    assert NO_STATUS != 0 and NO_STATUS not in (0, 200, 500) and NO_STATUS in (None, 1)
    assert NO_STATUS < 100 and not NO_STATUS >= 500 and hash(NO_STATUS) == hash(None)
    assert pickle.loads(pickle.dumps(NO_STATUS)) is NO_STATUS


def test_statuses_as_published() -> None:
    assert documented_handler(error_for_status(503, "down")) == "server error"
    assert documented_handler(error_for_status(413, "big")) == "too large"
    assert ClientTimeoutError("slow").status_code == 408  # synapse-sdk's code for a timeout


def test_a_503_that_says_gpu_unavailable_is_its_published_class() -> None:
    detail = {"message": "no GPU", "error_type": "gpu_unavailable", "max_utilization": 0.9}
    error = error_for_status(503, detail)
    assert isinstance(error, GpuUnavailableError) and isinstance(error, ServerError)
    assert error.message == "no GPU" and error.error_details == {"max_utilization": 0.9}
    assert type(error_for_status(503, {"detail": "restarting"})) is ServerError


def test_field_errors_read_one_line_per_field() -> None:
    detail = {"detail": [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]}
    error = ValidationError(422, detail)
    assert str(error) == "422 Validation Error:\n  body -> name: Field required (type=missing)"
    assert str(ValidationError(400, {"detail": "Offsets do not match"})) == "400: {'detail': 'Offsets do not match'}"


@pytest.mark.parametrize("cls", [*WITHOUT_AN_ANSWER, ClientTimeoutError])
def test_errors_pickle_with_their_upload_context(cls: type[ClientError]) -> None:
    error = cls("lost").with_upload("http://s/chunked_upload/7/", 1024)
    error.retry_history = (error,)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and (copy.url, copy.offset, copy.status_code) == (error.url, 1024, error.status_code)
    assert copy.retry_history[0] is copy
