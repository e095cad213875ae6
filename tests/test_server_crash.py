"""Crash safety: the reference server in a subprocess, killed with SIGKILL, restarted on its data dir.

A raw socket client sends a chunk's headers and part of its body, waits until
the server has written some of it to the ``.part`` file, and the server is
killed: after a restart the upload's offset must equal the bytes before the
torn chunk, the file must have exactly that length, and the upload must
continue to a byte-identical file. Kills after a commit (the answer sent but
never read) must keep the chunk. Every wait here waits for a condition (bytes
on disk, an answer on the socket), never for a guessed time.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
TOKEN = "crash-token"
BOUNDARY = "crash-boundary-7f3a"
DEADLINE = 30.0  # seconds a condition may take on a slow machine before the test fails


class ServerProcess:
    """``synapse-upload serve --port 0`` in a subprocess, with the URL it printed."""

    def __init__(self, data_dir: Path, *extra: str, token: str | None = TOKEN) -> None:
        """``token=None``: serve without ``--token``; ``self.token`` is then the one the server printed."""
        self.data_dir = data_dir
        self._log = open(data_dir.parent / f"{data_dir.name}-server.log", "ab")  # noqa: SIM115 (closed in kill)
        command = [sys.executable, "-m", "synapse_sdk.cli", "serve", "--port", "0", "--data-dir", str(data_dir)]
        command += [*([] if token is None else ["--token", token]), *extra]
        # Unbuffered: a line read must not pull the next into a buffer that select() cannot see.
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, bufsize=0)
        self.base_url = self._read(r"Serving chunked uploads on (https?://\S+?)/ ")
        self.token = self._read(r"Access token: (\S+)")

    def _read(self, pattern: str) -> str:
        """What ``pattern`` captures in the server's next line of output."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], DEADLINE)
        line = self.process.stdout.readline().decode() if ready else ""
        match = re.search(pattern, line)
        if match is None:
            self.kill()
            log = (self.data_dir.parent / f"{self.data_dir.name}-server.log").read_text()
            raise AssertionError(f"the server did not start: {line!r}\n{log}")
        return match.group(1)

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.base_url.split("://")[1].rsplit(":", 1)
        return host, int(port)

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, exactly like a crash."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._log.close()


@contextmanager
def serving(data_dir: Path, *extra: str, token: str | None = TOKEN) -> Iterator[ServerProcess]:
    server = ServerProcess(data_dir, *extra, token=token)
    try:
        yield server
    finally:
        server.kill()


def session(token: str = TOKEN) -> requests.Session:
    s = requests.Session()
    s.headers["Synapse-Access-Token"] = f"Token {token}"
    return s


def chunk_request(
    host_port: tuple[str, int], path: str, chunk: bytes, start: int, total: int, token: str = TOKEN, **headers: str
) -> tuple[bytes, bytes]:
    """A chunk PUT as raw bytes: (request head, multipart body); ``Idempotency_Key=`` adds that header."""
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="filename"\r\n\r\ndata.bin\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="chunk"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += chunk + f"\r\n--{BOUNDARY}--\r\n".encode()
    lines = [
        f"PUT {path} HTTP/1.1",
        f"Host: {host_port[0]}:{host_port[1]}",
        f"Synapse-Access-Token: Token {token}",
        f"Content-Range: bytes {start}-{start + len(chunk) - 1}/{total}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {len(body)}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def part_size(data_dir: Path, upload_id: int) -> int:
    path = data_dir / "uploads" / f"{upload_id}.part"
    return path.stat().st_size if path.exists() else -1


def put(s: requests.Session, url: str, data: bytes, start: int, total: int, **headers: str) -> requests.Response:
    content_range = f"bytes {start}-{start + len(data) - 1}/{total}"
    return s.put(
        url,
        data={"filename": "data.bin"},
        files={"file": ("chunk", data)},
        headers={"Content-Range": content_range, **headers},
    )


def finish(base_url: str, upload_id: int, data: bytes, offset: int, token: str = TOKEN) -> None:
    """Continue the upload from ``offset`` in 1 MiB chunks, finalize, check the stored file."""
    url = f"{base_url}/chunked_upload/{upload_id}/"
    with session(token) as s:
        for start in range(offset, len(data), 1 << 20):
            answer = put(s, url, data[start : start + (1 << 20)], start, len(data))
            assert answer.status_code == 200, answer.text
        answer = s.post(url, data={"md5": hashlib.md5(data).hexdigest()})
        assert answer.status_code == 200, answer.text
        assert answer.json()["checksum"] == hashlib.md5(data).hexdigest()
        assert Path(answer.json()["file"]).read_bytes() == data


def test_a_chunk_torn_by_kill_9_is_not_counted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data = os.urandom(5 * (1 << 20) + 123)
    first = 1 << 20
    with serving(data_dir) as server, session() as s:
        record = put(s, f"{server.base_url}/chunked_upload/", data[:first], 0, len(data)).json()
        head, body = chunk_request(
            server.host_port, f"/chunked_upload/{record['id']}/", data[first : 4 << 20], first, len(data)
        )
        with socket.create_connection(server.host_port) as raw:
            raw.sendall(head + body[: 2 << 20])  # the headers and about 2 MiB of a 3 MiB chunk
            # Some of the chunk is on disk past the recorded offset: the kill tears it.
            wait_for(lambda: part_size(data_dir, record["id"]) > first, "the torn chunk's first bytes on disk")
            server.kill()
    assert part_size(data_dir, record["id"]) > first
    with serving(data_dir) as restarted, session() as s:
        state = s.get(f"{restarted.base_url}/chunked_upload/{record['id']}/").json()
        assert (state["offset"], state["status"]) == (first, 1)
        assert state["url"] == f"{restarted.base_url}/chunked_upload/{record['id']}/"
        assert part_size(data_dir, record["id"]) == first
        finish(restarted.base_url, record["id"], data, state["offset"])


def test_a_create_torn_by_kill_9_leaves_nothing_and_its_key_is_free(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data = os.urandom(3 << 20)
    with serving(data_dir) as server:
        head, body = chunk_request(server.host_port, "/chunked_upload/", data, 0, len(data), Idempotency_Key="k-1")
        with socket.create_connection(server.host_port) as raw:
            raw.sendall(head + body[: 2 << 20])
            wait_for(lambda: part_size(data_dir, 1) > 0, "the torn create's first bytes on disk")
            server.kill()
    with serving(data_dir) as restarted, session() as s:
        assert list((data_dir / "uploads").iterdir()) == []
        assert s.get(f"{restarted.base_url}/chunked_upload/1/").status_code == 404
        # The client repeats its create with the same key: a fresh, single upload.
        answer = put(
            s, f"{restarted.base_url}/chunked_upload/", data[: 1 << 20], 0, len(data), **{"Idempotency-Key": "k-1"}
        )
        assert answer.status_code == 200 and answer.json()["offset"] == 1 << 20
        assert len(list((data_dir / "uploads").iterdir())) == 1
        finish(restarted.base_url, answer.json()["id"], data, 1 << 20)


def send_whole_chunk_and_kill_before_reading_the_answer(
    server: ServerProcess, path: str, head: bytes, body: bytes
) -> None:
    with socket.create_connection(server.host_port) as raw:
        raw.sendall(head + body)
        # The answer is written only after the commit: once it is readable the
        # chunk is committed, and the client never gets to read it.
        ready, _, _ = select.select([raw], [], [], DEADLINE)
        assert ready, "no answer from the server"
        server.kill()


def test_kill_9_after_a_chunk_commit_keeps_the_chunk(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data = os.urandom(3 * (1 << 20) + 7)
    with serving(data_dir) as server, session() as s:
        record = put(s, f"{server.base_url}/chunked_upload/", data[: 1 << 20], 0, len(data)).json()
        path = f"/chunked_upload/{record['id']}/"
        head, body = chunk_request(server.host_port, path, data[1 << 20 : 2 << 20], 1 << 20, len(data))
        send_whole_chunk_and_kill_before_reading_the_answer(server, path, head, body)
    with serving(data_dir) as restarted, session() as s:
        # The client lost the answer: it asks, and continues from what the server has.
        state = s.get(f"{restarted.base_url}{path}").json()
        assert state["offset"] == 2 << 20 and part_size(data_dir, record["id"]) == 2 << 20
        finish(restarted.base_url, record["id"], data, state["offset"])


def test_kill_9_after_an_idempotent_create_commit_answers_the_repeat(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data = os.urandom(2 << 20)
    with serving(data_dir) as server:
        head, body = chunk_request(
            server.host_port, "/chunked_upload/", data[: 1 << 20], 0, len(data), Idempotency_Key="k-2"
        )
        send_whole_chunk_and_kill_before_reading_the_answer(server, "/chunked_upload/", head, body)
    with serving(data_dir) as restarted, session() as s:
        first = data[: 1 << 20]
        answer = put(s, f"{restarted.base_url}/chunked_upload/", first, 0, len(data), **{"Idempotency-Key": "k-2"})
        assert answer.status_code == 200
        assert (answer.json()["id"], answer.json()["offset"]) == (1, 1 << 20)
        assert [p.name for p in (data_dir / "uploads").iterdir()] == ["1.part"]
        finish(restarted.base_url, 1, data, 1 << 20)


def test_a_finalize_killed_between_rename_and_record_is_repaired(tmp_path: Path) -> None:
    # The state such a kill leaves, made directly: the record still open, the
    # file already renamed to .done (Store.complete renames first).
    data_dir = tmp_path / "data"
    data = os.urandom(300_000)
    with serving(data_dir) as server, session() as s:
        record = put(s, f"{server.base_url}/chunked_upload/", data, 0, len(data)).json()
    uploads = data_dir / "uploads"
    (uploads / f"{record['id']}.part").rename(uploads / f"{record['id']}.done")
    with serving(data_dir) as restarted, session() as s:
        url = f"{restarted.base_url}/chunked_upload/{record['id']}/"
        assert s.get(url).json()["status"] == 1 and part_size(data_dir, record["id"]) == len(data)
        answer = s.post(url, data={"md5": hashlib.md5(data).hexdigest()})
        assert answer.status_code == 200 and Path(answer.json()["file"]).read_bytes() == data


def test_a_power_cut_that_lost_counted_bytes_resumes_from_the_file(tmp_path: Path) -> None:
    # kill -9 keeps the page cache; a power cut may not. The state it leaves,
    # made directly: the record counts bytes the file no longer has.
    data_dir = tmp_path / "data"
    data = os.urandom(2 << 20)
    with serving(data_dir) as server, session() as s:
        record = put(s, f"{server.base_url}/chunked_upload/", data[: 1 << 20], 0, len(data)).json()
    os.truncate(data_dir / "uploads" / f"{record['id']}.part", 1000)
    with serving(data_dir) as restarted, session() as s:
        assert s.get(f"{restarted.base_url}/chunked_upload/{record['id']}/").json()["offset"] == 1000
        finish(restarted.base_url, record["id"], data, 1000)


def test_a_restart_keeps_the_token_it_made_and_the_media_urls_it_signed(tmp_path: Path) -> None:
    """``serve`` without ``--token``: an upload in flight and a signed URL outlive a kill -9 and a restart."""
    from synapse_sdk.clients.backend import BackendClient

    data_dir = tmp_path / "data"
    data = os.urandom(3 << 20)
    weights = tmp_path / "weights.pt"
    weights.write_bytes(os.urandom(100_000))
    with serving(data_dir, token=None) as server, session(server.token) as s:
        token = server.token
        with BackendClient(server.base_url, access_token=token, journal=False) as client:
            media_url = client.create_model({"name": "resnet", "plugin": 3}, file=weights)["file"]
        record = put(s, f"{server.base_url}/chunked_upload/", data[: 1 << 20], 0, len(data)).json()
    kept = data_dir / "access-token"
    assert kept.read_text().strip() == token and kept.stat().st_mode & 0o777 == 0o600
    with serving(data_dir, token=None) as restarted:
        assert restarted.token == token
        finish(restarted.base_url, record["id"], data, 1 << 20, token=token)
        # The URL names the old port: the same path and signature, asked of the restarted server.
        path_and_query = media_url.split("/media/", 1)[1]
        answer = requests.get(f"{restarted.base_url}/media/{path_and_query}", timeout=DEADLINE)
        assert answer.status_code == 200 and answer.content == weights.read_bytes()
    # An explicit token is accepted instead, and the kept one stays for the next start without one.
    with serving(data_dir, token="another") as explicit:
        assert explicit.token == "another" and kept.read_text().strip() == token


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with serving(data_dir):
        with pytest.raises(AssertionError, match="in use by another process"):
            ServerProcess(data_dir)
        done = subprocess.run(
            [sys.executable, "-m", "synapse_sdk.cli", "cleanup", "--data-dir", str(data_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and "in use by another process" in done.stderr
        assert "Traceback" not in done.stderr
    # Once it is gone (even by SIGKILL), the directory is free again.
    with serving(data_dir) as again:
        assert requests.get(f"{again.base_url}/_stats/", headers={"Synapse-Access-Token": f"Token {TOKEN}"}).ok


def test_an_older_database_gains_the_key_column(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "uploads").mkdir(parents=True)
    old = sqlite3.connect(data_dir / "uploads.sqlite3")
    old.execute(
        "CREATE TABLE uploads (id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, tenant TEXT NOT NULL,"
        " filename TEXT NOT NULL, offset INTEGER NOT NULL, total INTEGER NOT NULL, status INTEGER NOT NULL,"
        " created_at TEXT NOT NULL, completed_at TEXT, checksum TEXT)"
    )
    created = "2999-01-01T00:00:00+00:00"  # far ahead, so it has not expired
    old.execute("INSERT INTO uploads VALUES (7, 'user', '', 'old.bin', 3, 6, 1, ?, NULL, NULL)", (created,))
    old.commit()
    old.close()
    (data_dir / "uploads" / "7.part").write_bytes(b"abc")
    with serving(data_dir) as server, session() as s:
        assert s.get(f"{server.base_url}/chunked_upload/7/").json()["offset"] == 3
        for _ in range(2):
            answer = put(s, f"{server.base_url}/chunked_upload/", b"new", 0, 3, **{"Idempotency-Key": "k"})
            assert answer.json()["id"] == 8
        answer = put(s, f"{server.base_url}/chunked_upload/7/", b"def", 3, 6)
        assert answer.status_code == 200
        assert s.post(f"{server.base_url}/chunked_upload/7/", data={"md5": hashlib.md5(b"abcdef").hexdigest()}).ok
