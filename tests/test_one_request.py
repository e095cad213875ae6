"""A file of at most one chunk goes in one POST with its MD5: one round trip, against both servers.

Bigger files keep the chunked conversation; ``send_whole=False`` keeps it for
every file. A lost answer is sent again under the same ``Idempotency-Key``
(the reference server answers the upload it made, no twin); a server that
refuses whole-file POSTs (405) gets the chunk and the finalize instead; a
file whose bytes changed on the way is refused by its MD5 and sent again.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from pathlib import Path

import pytest

from synapse_sdk.clients.backend import BackendClient
from tests.conftest import ALICE, make_file
from tests.faults import Fault, Proxy, corrupt, drop_response, status

pytestmark = pytest.mark.integration

KIB = 1024
CHUNK = 64 * KIB


def requests_of(proxy: Proxy) -> list[tuple[str, str]]:
    return [(entry.method, entry.path.split("?")[0]) for entry in proxy.log]


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK])
def test_a_file_of_one_chunk_is_one_request(server, tmp_path: Path, size: int) -> None:
    path, data = make_file(tmp_path, "small.bin", size)
    with Proxy(server.base_url) as proxy, BackendClient(proxy.url, access_token=server.user_token, journal=False) as c:
        result = c.create_chunked_upload(path, chunk_size=CHUNK)
    assert requests_of(proxy) == [("POST", "/chunked_upload/")]
    assert result["completed_at"]
    if server.kind == "reference":
        assert result["checksum"] == hashlib.md5(data).hexdigest() and result["size"] == size
        assert Path(result["file"]).read_bytes() == data


def test_a_bigger_file_and_send_whole_off_keep_the_chunked_conversation(server, tmp_path: Path) -> None:
    big, _ = make_file(tmp_path, "big.bin", CHUNK + 1)
    small, _ = make_file(tmp_path, "small.bin", 10)
    with Proxy(server.base_url) as proxy:
        with BackendClient(proxy.url, access_token=server.user_token, journal=False) as client:
            client.create_chunked_upload(big, chunk_size=CHUNK)
        with BackendClient(proxy.url, access_token=server.user_token, journal=False, send_whole=False) as client:
            assert client.settings()["send_whole"] is False
            client.create_chunked_upload(small, chunk_size=CHUNK)
        assert [method for method, _ in requests_of(proxy)] == ["PUT", "PUT", "POST", "PUT", "POST"]


def test_a_lost_answer_is_sent_again_and_makes_no_twin(reference_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "small.bin", 1000)
    first = itertools.count()

    def lose_the_first_answer(index: int, method: str, target: str, headers: Mapping[str, str]) -> Fault | None:
        return drop_response() if next(first) == 0 else None

    before = reference_server.stats()
    with (
        Proxy(reference_server.base_url, lose_the_first_answer) as proxy,
        BackendClient(proxy.url, access_token=ALICE, journal=False) as client,
    ):
        client.sleep = lambda seconds: None
        result = client.create_chunked_upload(path, chunk_size=CHUNK)
    assert requests_of(proxy) == [("POST", "/chunked_upload/")] * 2
    assert proxy.stats.injected == {"drop_response": 1}
    after = reference_server.stats()
    assert after["uploads_created"] - before["uploads_created"] == 1  # the repeat answered the first upload
    assert Path(result["file"]).read_bytes() == data


def test_a_server_refusing_whole_posts_gets_a_chunk_and_a_finalize(server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "small.bin", 5000)

    def refuse_whole_posts(index: int, method: str, target: str, headers: Mapping[str, str]) -> Fault | None:
        return status(405) if (method, target.split("?")[0]) == ("POST", "/chunked_upload/") else None

    with (
        Proxy(server.base_url, refuse_whole_posts) as proxy,
        BackendClient(proxy.url, access_token=server.user_token, journal=False) as client,
    ):
        result = client.create_chunked_upload(path, chunk_size=CHUNK)
    assert [method for method, _ in requests_of(proxy)] == ["POST", "PUT", "POST"]
    assert result["completed_at"]
    if server.kind == "reference":
        assert Path(result["file"]).read_bytes() == data


def test_bytes_changed_on_the_way_are_refused_by_the_md5_and_sent_again(reference_server, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "small.bin", 20 * KIB)
    first = itertools.count()

    def flip_a_byte_of_the_first(index: int, method: str, target: str, headers: Mapping[str, str]) -> Fault | None:
        return corrupt(int(headers["content-length"]) // 2) if next(first) == 0 else None

    with (
        Proxy(reference_server.base_url, flip_a_byte_of_the_first) as proxy,
        BackendClient(proxy.url, access_token=ALICE, journal=False) as client,
    ):
        result = client.create_chunked_upload(path, chunk_size=CHUNK)
    assert proxy.stats.answers[400] == 1 and proxy.stats.injected == {"corrupt": 1}
    assert result["checksum"] == hashlib.md5(data).hexdigest()
    assert Path(result["file"]).read_bytes() == data
