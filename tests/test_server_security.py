"""The reference server's defences, against real servers on loopback.

Who may see what (401, and 404 rather than 403 for another owner's upload),
what a hostile filename can do (nothing: it lives in SQLite only), the limits
(413 file size, 507 quota and disk full, 429 rate) and the idempotent create.
Each refusal is checked for what it leaves behind: nothing.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from requests import Session

from synapse_sdk.server import ReferenceServer
from synapse_sdk.server import store as store_module
from tests.test_reference_server import TOKENS, md5_b64, put_chunk, session_for
from tests.test_server_crash import DEADLINE, chunk_request, wait_for

pytestmark = pytest.mark.integration

KEY = "Idempotency-Key"


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    with ReferenceServer(tmp_path_factory.mktemp("security"), tokens=TOKENS) as running:
        yield running


@pytest.fixture
def alice() -> Iterator[Session]:
    with session_for("alice-token") as session:
        yield session


def create(session: Session, base_url: str, first: bytes, total: int, **headers: str) -> requests.Response:
    content_range = f"bytes 0-{len(first) - 1}/{total}"
    return session.put(
        f"{base_url}/chunked_upload/",
        data={"filename": "data.bin"},
        files={"file": ("chunk", first)},
        headers={"Content-Range": content_range, **headers},
    )


def uploads(server: ReferenceServer) -> list[str]:
    return sorted(path.name for path in (server.data_dir / "uploads").iterdir())


def open_state(session: Session, url: str) -> tuple[int, int]:
    state = session.get(url).json()
    return state["offset"], state["status"]


# -- who may see what ----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Synapse-Access-Token": "Token wrong"},
        {"Synapse-Access-Token": "alice-token"},  # no "Token " scheme
        {"Synapse-Access-Token": "Token "},
        {"Authorization": "Token wrong"},
        {"Authorization": "Bearer alice-token"},
        # A bad primary token is not rescued by a good legacy one.
        {"Synapse-Access-Token": "Token wrong", "Authorization": "Token alice-token"},
        {"Synapse-Tenant": "Token acme"},
    ],
)
def test_no_valid_token_is_401_everywhere(server: ReferenceServer, headers: dict[str, str]) -> None:
    before = uploads(server)
    for method, path in [
        ("GET", "/chunked_upload/1/"),
        ("PUT", "/chunked_upload/"),
        ("POST", "/chunked_upload/"),
        ("POST", "/chunked_upload/1/"),
        ("GET", "/_stats/"),
        ("GET", "/nowhere"),
    ]:
        answer = requests.request(method, server.base_url + path, headers=headers, data=b"x" * 1000)
        assert answer.status_code == 401, (method, path)
        assert answer.json()["detail"] and answer.headers["WWW-Authenticate"] == "Token"
    assert uploads(server) == before


def test_the_legacy_authorization_header_works(server: ReferenceServer) -> None:
    with session_for("alice-token", header="Authorization") as legacy, session_for("alice-token") as primary:
        record = create(legacy, server.base_url, b"abc", 6).json()
        # The same user either way: the upload is one and the same.
        assert primary.get(record["url"]).json()["offset"] == 3


def test_another_users_or_tenants_upload_is_404_on_every_method(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server.base_url, b"secret", 12).json()
    intruders = [
        session_for("bob-token"),
        session_for("alice-token", tenant="acme"),
        session_for("bob-token", header="Authorization"),
    ]
    for intruder in intruders:
        with intruder:
            assert intruder.get(record["url"]).status_code == 404
            answer = put_chunk(intruder, record["url"], b"sneaky", 6, 12)
            assert answer.status_code == 404 and "expected_offset" not in answer.json()
            assert intruder.post(record["url"], data={"md5": hashlib.md5(b"secret").hexdigest()}).status_code == 404
            # Exactly the answer for an id that does not exist: no existence leak.
            missing = f"{server.base_url}/chunked_upload/999999/"
            assert intruder.get(record["url"]).json() == intruder.get(missing).json()
    assert open_state(alice, record["url"]) == (6, 1)
    assert (server.data_dir / "uploads" / f"{record['id']}.part").read_bytes() == b"secret"


def test_a_tenant_cannot_see_the_plain_users_upload_nor_the_reverse(server: ReferenceServer) -> None:
    with session_for("alice-token", tenant="acme") as acme, session_for("alice-token") as plain:
        in_acme = create(acme, server.base_url, b"acme data", 20).json()
        plain_record = create(plain, server.base_url, b"plain data", 20).json()
        assert plain.get(in_acme["url"]).status_code == 404
        assert acme.get(plain_record["url"]).status_code == 404
        with session_for("alice-token", tenant="other") as other:
            assert other.get(in_acme["url"]).status_code == 404


def test_malformed_ids_are_400_and_unknown_ones_404(server: ReferenceServer, alice: Session) -> None:
    for garbage in ("abc", "-1", "1.5", "0x10", "1e3", "9" * 19, "%00", "..", "%2e%2e"):
        answer = alice.get(f"{server.base_url}/chunked_upload/{garbage}/")
        assert answer.status_code in (400, 404), garbage
        assert answer.json()["detail"]
    assert alice.get(f"{server.base_url}/chunked_upload/abc/").status_code == 400
    assert alice.get(f"{server.base_url}/chunked_upload/{'9' * 18}/").status_code == 404


# -- hostile filenames -----------------------------------------------------------

HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "a\x00b",
    "".join(chr(code) for code in range(1, 32)) + "\x7f",
    "line\r\nContent-Type: text/html\r\n\r\n<script>",
    "x" * 10_000,
    "é" * 10_000,  # 20,000 bytes of UTF-8
    "..\\..\\windows\\system32",
    "uploads/1.part",
    "  spaces  ",
    "",
]


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def test_hostile_filenames_round_trip_and_touch_nothing_outside_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "inner" / "data"
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "sibling.txt").write_text("left alone")
    before = tree(tmp_path)
    with ReferenceServer(data_dir, tokens=TOKENS) as server, session_for("alice-token") as alice:
        for name in HOSTILE_NAMES:
            data = os.urandom(2000)
            answer = alice.put(
                f"{server.base_url}/chunked_upload/",
                data={"filename": name},
                files={"file": ("chunk", data[:1000])},
                headers={"Content-Range": f"bytes 0-999/{len(data)}"},
            )
            assert answer.status_code == 200, (name[:20], answer.text)
            record = answer.json()
            assert record["filename"] == name
            assert alice.get(record["url"]).json()["filename"] == name
            assert put_chunk(alice, record["url"], data[1000:], 1000, len(data)).json()["filename"] == name
            done = alice.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()}).json()
            assert done["filename"] == name
            assert Path(done["file"]).parent == server.data_dir / "uploads"
            assert Path(done["file"]).read_bytes() == data
            # The whole-file POST takes the name from the part's filename; the
            # client escapes that one in its header, so only its safety is checked.
            whole = alice.post(
                f"{server.base_url}/chunked_upload/",
                data={"md5": hashlib.md5(b"w").hexdigest()},
                files={"file": (name, b"w")},
            )
            assert whole.status_code == 200, whole.text
            assert Path(whole.json()["file"]).parent == server.data_dir / "uploads"
    after = tree(tmp_path)
    inside = "inner/data"
    assert {p for p in after if not p.startswith(inside)} == before
    stored = {p for p in after if p.startswith(inside)}
    allowed = {inside, f"{inside}/uploads", f"{inside}/lock", f"{inside}/media-key"}
    allowed |= {f"{inside}/uploads.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")}
    files = {p for p in stored - allowed}
    assert all(p.startswith(f"{inside}/uploads/") and p.endswith(".done") for p in files), files
    assert len(files) == 2 * len(HOSTILE_NAMES)


def test_a_filename_over_the_field_limit_is_400(server: ReferenceServer, alice: Session) -> None:
    before = uploads(server)
    answer = alice.put(
        f"{server.base_url}/chunked_upload/",
        data={"filename": "x" * (64 * 1024 + 1)},
        files={"file": ("chunk", b"ab")},
        headers={"Content-Range": "bytes 0-1/2"},
    )
    assert answer.status_code == 400 and "filename" in answer.json()["detail"]
    assert uploads(server) == before


# -- limits ----------------------------------------------------------------------


def test_a_file_over_max_size_is_413_and_stores_nothing(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tokens=TOKENS, max_upload_size=1000) as limited, session_for("alice-token") as s:
        assert create(s, limited.base_url, b"x" * 10, 1001).status_code == 413
        answer = s.post(
            f"{limited.base_url}/chunked_upload/", data={"md5": "0" * 32}, files={"file": ("big", b"y" * 1001)}
        )
        assert answer.status_code == 413 and "limit" in answer.json()["detail"]
        assert uploads(limited) == []
        assert create(s, limited.base_url, b"x" * 10, 1000).status_code == 200


def test_quota_refuses_a_chunk_that_would_cross_it_and_keeps_nothing(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path, tokens=TOKENS, quota=1000) as server, session_for("alice-token") as alice:
        record = create(alice, server.base_url, b"a" * 600, 1200).json()
        # An append whose announced size crosses the quota: refused up front.
        answer = put_chunk(alice, record["url"], b"b" * 500, 600, 1200)
        assert answer.status_code == 507
        assert answer.json() == {"detail": "storage quota exceeded"}
        assert open_state(alice, record["url"]) == (600, 1)
        assert (server.data_dir / "uploads" / f"{record['id']}.part").stat().st_size == 600
        # A create that would cross it leaves no upload behind.
        assert create(alice, server.base_url, b"c" * 401, 401).status_code == 507
        assert uploads(server) == [f"{record['id']}.part"]
        # A whole-file POST announces no size: it is cut off as it crosses.
        big = os.urandom(5000)
        answer = alice.post(
            f"{server.base_url}/chunked_upload/",
            data={"md5": hashlib.md5(big).hexdigest()},
            files={"file": ("whole", big)},
        )
        assert answer.status_code == 507 and answer.json()["detail"] == "storage quota exceeded"
        assert uploads(server) == [f"{record['id']}.part"]
        # What fits still fits, exactly up to the quota.
        assert put_chunk(alice, record["url"], b"b" * 400, 600, 1200).status_code == 200
        # Another user has a quota of their own; a tenant header does not open a new one.
        with session_for("bob-token") as bob:
            assert create(bob, server.base_url, b"d" * 1000, 1000).status_code == 200
        with session_for("alice-token", tenant="acme") as acme:
            assert create(acme, server.base_url, b"e", 1).status_code == 507


def test_quota_counts_complete_uploads_and_survives_a_restart(tmp_path: Path) -> None:
    data = os.urandom(700)
    with ReferenceServer(tmp_path, tokens=TOKENS, quota=1000) as server, session_for("alice-token") as alice:
        answer = alice.post(
            f"{server.base_url}/chunked_upload/",
            data={"md5": hashlib.md5(data).hexdigest()},
            files={"file": ("whole", data)},
        )
        assert answer.status_code == 200
        assert create(alice, server.base_url, b"x" * 301, 301).status_code == 507
    with ReferenceServer(tmp_path, tokens=TOKENS, quota=1000) as server, session_for("alice-token") as alice:
        assert create(alice, server.base_url, b"x" * 301, 301).status_code == 507
        assert create(alice, server.base_url, b"x" * 300, 300).status_code == 200


def test_concurrent_chunks_never_cross_the_quota_together(tmp_path: Path) -> None:
    # Each announces a size that fits alone; the bytes are claimed as they are
    # written, so whatever the interleaving the total stays within the quota.
    quota = 3 * 400_000
    with ReferenceServer(tmp_path, tokens=TOKENS, quota=quota) as server:
        statuses: list[int] = []

        def upload() -> None:
            with session_for("alice-token") as s:
                statuses.append(create(s, server.base_url, os.urandom(700_000), 700_000).status_code)

        threads = [threading.Thread(target=upload) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(statuses) == 4 and set(statuses) <= {200, 507}
        stored = sum(path.stat().st_size for path in (server.data_dir / "uploads").iterdir())
        assert stored == 700_000 * statuses.count(200) <= quota


def fill_up_and_recover(server: ReferenceServer, alice: Session, free_space: Callable[[], None]) -> None:
    """An append that meets a full disk is 507 and truncated away; once space is freed it goes through."""
    data = os.urandom(800_000)
    record = create(alice, server.base_url, data[:400_000], len(data)).json()
    filler = os.urandom(500_000)
    answer = alice.post(
        f"{server.base_url}/chunked_upload/",
        data={"md5": hashlib.md5(filler).hexdigest()},
        files={"file": ("filler", filler)},
    )
    assert answer.status_code == 200, answer.text
    rest = data[400_000:]
    answer = put_chunk(alice, record["url"], rest, 400_000, len(data), content_md5=md5_b64(rest))
    assert answer.status_code == 507 and answer.json() == {"detail": "storage full"}
    assert open_state(alice, record["url"]) == (400_000, 1)
    assert (server.data_dir / "uploads" / f"{record['id']}.part").stat().st_size == 400_000
    free_space()
    answer = put_chunk(alice, record["url"], rest, 400_000, len(data), content_md5=md5_b64(rest))
    assert answer.status_code == 200, answer.text
    done = alice.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()}).json()
    assert Path(done["file"]).read_bytes() == data


def test_a_full_disk_is_507_with_the_chunk_truncated_on_a_real_tmpfs(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    uploads_dir = tmp_path / "uploads"
    uploads_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(uploads_dir)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with ReferenceServer(tmp_path, tokens=TOKENS) as server, session_for("alice-token") as alice:

            def free_space() -> None:
                # An operator makes room: the filler upload (the only .done file) goes.
                for done in uploads_dir.glob("*.done"):
                    done.unlink()

            fill_up_and_recover(server, alice, free_space)
    finally:
        subprocess.run(["umount", str(uploads_dir)], check=True)


def test_a_full_disk_is_507_with_the_chunk_truncated_by_an_injected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capacity = {"bytes": 1_000_000}
    used = {"bytes": 0}
    write_at = store_module._write_at

    def disk_of_limited_size(fd: int, view: memoryview, position: int) -> None:
        # Like a file system that fills up: writes what fits, then ENOSPC.
        room = capacity["bytes"] - used["bytes"]
        write_at(fd, view[:room], position)
        used["bytes"] += min(room, len(view))
        if len(view) > room:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_write_at", disk_of_limited_size)
    with ReferenceServer(tmp_path, tokens=TOKENS) as server, session_for("alice-token") as alice:

        def free_space() -> None:
            used["bytes"] = 400_000  # the upload's first chunk; the filler is gone

        fill_up_and_recover(server, alice, free_space)


def test_rate_limit_is_429_with_retry_after_per_token(tmp_path: Path) -> None:
    clock = FakeClock()
    limited = ReferenceServer(tmp_path, tokens=TOKENS, rate_limit=(1, 2), clock=clock)
    with limited, session_for("alice-token") as alice, session_for("bob-token") as bob:
        stats = f"{limited.base_url}/_stats/"
        assert [alice.get(stats).status_code for _ in range(2)] == [200, 200]
        answer = alice.get(stats)
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
        assert "throttled" in answer.json()["detail"]
        # A throttled chunk is not stored.
        throttled = create(alice, limited.base_url, b"abc", 3)
        assert throttled.status_code == 429 and uploads(limited) == []
        # Another token has its own bucket; a wrong token is 401, not throttled.
        assert bob.get(stats).status_code == 200
        assert requests.get(stats, headers={"Synapse-Access-Token": "Token nope"}).status_code == 401
        clock.now += 0.5
        assert alice.get(stats).headers["Retry-After"] == "1"  # half a token is not one
        clock.now += 0.5
        assert alice.get(stats).status_code == 200
        assert alice.get(stats).status_code == 429
        # Idle time refills the bucket up to the burst, no further.
        clock.now += 3600
        assert [alice.get(stats).status_code for _ in range(3)] == [200, 200, 429]


def test_retry_after_says_how_long_a_slow_bucket_takes(tmp_path: Path) -> None:
    clock = FakeClock()
    limited = ReferenceServer(tmp_path, tokens=TOKENS, rate_limit=(0.1, 1), clock=clock)
    with limited, session_for("alice-token") as alice:
        assert alice.get(f"{limited.base_url}/_stats/").status_code == 200
        answer = alice.get(f"{limited.base_url}/_stats/")
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "10"
        clock.now += 9.5
        assert alice.get(f"{limited.base_url}/_stats/").headers["Retry-After"] == "1"


# -- idempotent create ----------------------------------------------------------


def test_a_repeated_create_with_the_same_key_answers_the_first_upload(server: ReferenceServer, alice: Session) -> None:
    data = os.urandom(3000)
    first = create(alice, server.base_url, data[:1000], len(data), **{KEY: "key-one"})
    assert first.status_code == 200
    record = first.json()
    before, stats = uploads(server), server.stats()
    # The client lost the answer and repeats the create: nothing is stored.
    again = create(alice, server.base_url, data[:1000], len(data), **{KEY: "key-one"})
    assert again.status_code == 200 and again.json() == record
    assert uploads(server) == before
    assert server.stats()["chunks_stored"] == stats["chunks_stored"]
    assert server.stats()["uploads_created"] == stats["uploads_created"]
    # The upload moves on; a late repeat answers its current record.
    assert put_chunk(alice, record["url"], data[1000:2000], 1000, len(data)).status_code == 200
    later = create(alice, server.base_url, data[:1000], len(data), **{KEY: "key-one"}).json()
    assert (later["id"], later["offset"]) == (record["id"], 2000)
    assert put_chunk(alice, record["url"], data[2000:], 2000, len(data)).status_code == 200
    assert alice.post(record["url"], data={"md5": hashlib.md5(data).hexdigest()}).status_code == 200


def test_the_key_is_per_owner(server: ReferenceServer, alice: Session) -> None:
    mine = create(alice, server.base_url, b"alice", 10, **{KEY: "shared-key"}).json()
    with session_for("bob-token") as bob, session_for("alice-token", tenant="acme") as acme:
        bobs = create(bob, server.base_url, b"bob!!", 10, **{KEY: "shared-key"}).json()
        acmes = create(acme, server.base_url, b"acme!", 10, **{KEY: "shared-key"}).json()
        assert len({mine["id"], bobs["id"], acmes["id"]}) == 3
        assert bob.get(bobs["url"]).json()["offset"] == 5
    # Without a key, or with another one, every create is a new upload.
    ids = {create(alice, server.base_url, b"x", 2).json()["id"] for _ in range(2)}
    ids.add(create(alice, server.base_url, b"x", 2, **{KEY: "other-key"}).json()["id"])
    assert len(ids) == 3 and mine["id"] not in ids


def test_a_key_reused_for_another_file_is_422(server: ReferenceServer, alice: Session) -> None:
    record = create(alice, server.base_url, b"abc", 10, **{KEY: "reused"}).json()
    before = uploads(server)
    answer = create(alice, server.base_url, b"abc", 11, **{KEY: "reused"})
    assert answer.status_code == 422 and "Idempotency-Key" in answer.json()["detail"]
    assert uploads(server) == before
    assert open_state(alice, record["url"]) == (3, 1)


@pytest.mark.parametrize("value", ["", "x" * 201, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_400(server: ReferenceServer, alice: Session, value: str) -> None:
    before = uploads(server)
    answer = create(alice, server.base_url, b"abc", 3, **{KEY: value.encode("latin-1")})
    assert answer.status_code == 400 and "Idempotency-Key" in answer.json()["detail"]
    assert uploads(server) == before


def test_a_key_of_200_characters_is_fine_and_survives_a_restart(tmp_path: Path) -> None:
    key = "k" * 100 + "!~ \"'" + "z" * 95
    with ReferenceServer(tmp_path, tokens=TOKENS) as first, session_for("alice-token") as alice:
        record = create(alice, first.base_url, b"abc", 6, **{KEY: key}).json()
    with ReferenceServer(tmp_path, tokens=TOKENS) as second, session_for("alice-token") as alice:
        again = create(alice, second.base_url, b"abc", 6, **{KEY: key}).json()
        assert (again["id"], again["offset"]) == (record["id"], 3)
        assert len(uploads(second)) == 1


def test_a_failed_create_frees_its_key(server: ReferenceServer, alice: Session) -> None:
    # A first chunk refused (its part is shorter than announced) leaves no upload, so no key.
    answer = alice.put(
        f"{server.base_url}/chunked_upload/",
        data={"filename": "f"},
        files={"file": ("chunk", b"ab")},
        headers={"Content-Range": "bytes 0-2/6", KEY: "retry-me"},
    )
    assert answer.status_code == 400
    first = create(alice, server.base_url, b"abc", 6, **{KEY: "retry-me"})
    assert first.status_code == 200 and first.json()["offset"] == 3


def read_answer(raw: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(raw)
    response.begin()
    return response.status, json.loads(response.read())


@pytest.mark.parametrize("first_ends", ["completed", "abandoned"])
def test_a_repeat_while_the_first_create_still_streams_waits_for_it(
    tmp_path: Path, alice: Session, first_ends: str
) -> None:
    # The client gave up on a create whose chunk is still arriving, and repeats
    # it: the repeat waits for the first to end, then answers its upload (or,
    # if it never arrived whole, makes the upload itself). Never two uploads.
    data = os.urandom(2 << 20)
    with ReferenceServer(tmp_path, tokens=TOKENS) as server:
        host_port = ("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
        head, body = chunk_request(
            host_port, "/chunked_upload/", data, 0, len(data), "alice-token", Idempotency_Key="k"
        )
        with socket.create_connection(host_port) as raw:
            raw.sendall(head + body[: 1 << 20])
            wait_for(lambda: (tmp_path / "uploads" / "1.part").exists(), "the first create's bytes on disk")
            repeat: list[requests.Response] = []
            repeating = threading.Thread(
                target=lambda: repeat.append(create(alice, server.base_url, data, len(data), **{KEY: "k"}))
            )
            repeating.start()
            repeating.join(0.2)
            assert repeating.is_alive(), "the repeat did not wait for the first create"
            if first_ends == "completed":
                raw.sendall(body[1 << 20 :])
                status, record = read_answer(raw)
                assert status == 200
            else:
                raw.shutdown(socket.SHUT_RDWR)
        repeating.join(DEADLINE)
        assert repeat[0].status_code == 200, repeat[0].text
        if first_ends == "completed":
            assert repeat[0].json() == record
        assert repeat[0].json()["offset"] == len(data)
        assert len(uploads(server)) == 1
