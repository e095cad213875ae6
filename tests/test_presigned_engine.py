"""``engine.presigned`` without sockets: part plans, range bodies, one-pass digests, storage errors, journal entries."""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import (
    ClientTimeoutError,
    FileChangedError,
    NotFoundError,
    ProtocolError,
    ServerError,
    ValidationError,
)
from engine.journal import Journal, JournalEntry, PresignedEntry
from engine.presigned import (
    GatewayRefusalError,
    Part,
    PartChecksumError,
    RangeBody,
    digest_parts,
    parse_storage_error,
    plan_parts,
    redact,
    storage_error,
)
from engine.source import FileRange, MappedFile
from engine.transport import Response

pytestmark = pytest.mark.unit

#: Hypothesis shares one file per example through tmp_path.
_settings = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _urls(count: int) -> list[tuple[int, str]]:
    return [(number, f"http://storage/part{number}") for number in range(1, count + 1)]


@_settings
@given(size=st.integers(0, 10**7), part_size=st.integers(1, 10**6), extra=st.integers(0, 3))
def test_plan_parts_covers_the_file_in_order(size, part_size, extra):
    needed = max(1, math.ceil(size / part_size))
    if needed > 10_000:
        return
    parts = plan_parts(size, part_size, _urls(needed + extra))
    assert len(parts) == needed
    assert parts[0].start == 0 and parts[-1].end == size
    for before, after in itertools.pairwise(parts):
        assert before.end == after.start and before.length == part_size
    assert all(0 <= part.length <= part_size for part in parts)
    assert [part.url for part in parts] == [url for _, url in _urls(needed)]


def test_plan_parts_refuses_what_cannot_be_sent():
    with pytest.raises(ProtocolError, match="it needs 3"):
        plan_parts(25, 10, _urls(2))
    with pytest.raises(ProtocolError, match="positive number of bytes"):
        plan_parts(25, 0, _urls(3))
    with pytest.raises(ProtocolError, match="distinct"):
        plan_parts(25, 10, [(1, "a"), (1, "b"), (2, "c")])
    with pytest.raises(ValueError, match="cannot have -1 bytes"):
        plan_parts(-1, 10, _urls(1))
    assert plan_parts(0, 10, _urls(1)) == [Part(1, 0, 0, "http://storage/part1")]


@_settings
@given(data=st.binary(max_size=300_000), cut=st.tuples(st.floats(0, 1), st.floats(0, 1)), sendfile=st.booleans())
def test_range_body_gives_exactly_its_bytes(tmp_path, data, cut, sendfile):
    path = tmp_path / "body.bin"
    path.write_bytes(data)
    start, end = sorted(int(fraction * len(data)) for fraction in cut)
    with MappedFile(path, window=65536) as source:
        body = RangeBody(source, start, end, sendfile=sendfile)
        assert len(body) == end - start
        for _ in range(2):  # sendable again (a retry, a 307)
            got = bytearray()
            for piece in body:
                if isinstance(piece, FileRange):
                    got += data[piece.offset : piece.offset + piece.count]
                else:
                    got += piece
            assert bytes(got) == data[start:end]


def test_range_body_refuses_a_range_outside_the_file_and_a_file_that_shrank(tmp_path):
    path = tmp_path / "shrinks.bin"
    path.write_bytes(os.urandom(300_000))
    with MappedFile(path, window=65536) as source:
        with pytest.raises(ValueError, match="outside the 300000-byte file"):
            RangeBody(source, 10, 300_001)
        body = RangeBody(source, 0, 300_000)
        os.truncate(path, 1000)
        with pytest.raises(FileChangedError):
            for _ in body:
                pass


@pytest.mark.parametrize("service", [False, True], ids=["alone", "hashing-service"])
@_settings
@given(data=st.binary(max_size=200_000), part_size=st.integers(1, 70_000))
def test_digest_parts_is_each_parts_md5_and_the_files_sha1_in_one_pass(twin, service, tmp_path, data, part_size):
    from engine.hashing_service import HashingService

    path = tmp_path / "digest.bin"
    path.write_bytes(data)
    count = max(1, math.ceil(len(data) / part_size))
    with MappedFile(path, window=65536) as source:
        parts = plan_parts(source.size, part_size, _urls(count))
        sha1 = hashlib.sha1()
        hashing = HashingService(twin) if service else None
        digests = list(digest_parts(source, parts, sha1, twin, hashing))
    assert [part for part, _ in digests] == parts
    for part, md5 in digests:
        assert md5 == hashlib.md5(data[part.start : part.end]).digest()
    assert sha1.hexdigest() == hashlib.sha1(data).hexdigest()


@given(st.binary(max_size=20_000))
def test_parse_storage_error_never_raises(body):
    found = parse_storage_error(body)
    assert set(found) <= {"Code", "Message"}


def test_parse_storage_error_takes_only_code_and_message():
    body = (
        b'<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>no</Message>'
        b"<StringToSign>secret</StringToSign><AWSAccessKeyId>AKIA</AWSAccessKeyId></Error>"
    )
    assert parse_storage_error(body) == {"Code": "SignatureDoesNotMatch", "Message": "no"}


def _answer(status: int, code: str | None = None) -> Response:
    body = b"" if code is None else f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode()
    return Response(status, body, {})


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "RequestTimeout", ClientTimeoutError),  # retried by the policy
        (400, "BadDigest", PartChecksumError),  # resent
        (503, "SlowDown", ServerError),
        (500, "InternalError", ServerError),
        (400, None, GatewayRefusalError),  # a gateway's refusal: resent
        (400, "InvalidArgument", ValidationError),  # final
        (404, "NoSuchUpload", NotFoundError),
        (307, "TemporaryRedirect", ProtocolError),
    ],
)
def test_storage_errors_map_to_what_the_retry_policy_judges(status, code, kind):
    error = storage_error(_answer(status, code), "https://bucket.s3.example/key?X-Amz-Signature=secret")
    assert type(error) is kind
    assert "secret" not in str(error) and "https://bucket.s3.example/key" in str(error)


def test_redact_drops_the_query():
    assert redact("http://h:9/b/k%20x?X-Amz-Signature=s&a=b") == "http://h:9/b/k%20x"


def test_presigned_journal_entries_round_trip_owner_only(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 10)
    with MappedFile(path) as source:
        identity = source.identity
    journal = Journal(tmp_path / "journal")
    slot = journal.slot("presigned http://backend", path)
    assert slot is not None
    entry = PresignedEntry(
        "presigned http://backend", str(path), identity, "k", "up", 5, [[1, "http://s/1?sig"]], "2030-01-01T00:00:00Z"
    )
    entry.done["1"] = '"etag"'
    slot.save(entry)
    assert slot.load() == entry
    (saved,) = (tmp_path / "journal").glob("*.json")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    slot.release()
    # The chunked kind still round-trips beside it.
    other = journal.slot("http://backend", path)
    chunked = JournalEntry("http://backend", str(path), identity, "http://backend/chunked_upload/1/", 1, 5)
    other.save(chunked)
    assert other.load() == chunked
    other.release()
