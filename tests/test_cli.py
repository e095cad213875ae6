"""The synapse-upload command line, driven as a user would: a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from synapse_sdk.cli import parse_size
from synapse_sdk.server import ReferenceServer
from tests.conftest import ALICE, make_file
from tests.faults import Proxy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
KIB = 1024


def run(*args: str, env: dict | None = None, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "synapse_sdk.cli", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,
    )


def against(server) -> dict[str, str]:
    return {"SYNAPSE_HOST": server.base_url, "SYNAPSE_ACCESS_TOKEN": ALICE}


def test_upload_with_no_host_uses_an_embedded_server(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 300_000)
    done = run("upload", str(path), "--chunk-size", "64KiB")
    assert done.returncode == 0, done.stderr
    assert "reference server" in done.stderr
    assert f"checksum={hashlib.md5(data).hexdigest()}" in done.stdout and "id=1 " in done.stdout


def test_a_dataset_directory_with_json_results(reference_server, tmp_path: Path) -> None:
    files = {}
    for i in range(200):
        path, data = make_file(tmp_path / "dataset" / f"shard{i % 7}", f"item{i:03d}.bin", 1 + (i * 131) % 5000)
        files[str(path)] = data
    for i in range(3):
        path, data = make_file(tmp_path / "dataset", f"big{i}.bin", 6 * 64 * KIB + i)
        files[str(path)] = data
    done = run(
        "upload",
        "-r",
        str(tmp_path / "dataset"),
        "--json",
        "--chunk-size",
        "64KiB",
        "--concurrency",
        "8",
        env=against(reference_server),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"] == 203 and not report["failed"]
    assert {r["path"]: r["checksum"] for r in report["successful"]} == {
        p: hashlib.md5(d).hexdigest() for p, d in files.items()
    }
    assert report["bytes"] == sum(len(d) for d in files.values())
    # Not a terminal: plain progress lines, no cursor movement.
    assert "progress: " in done.stderr and "\x1b[" not in done.stderr
    assert "203 of 203 files uploaded" in done.stderr


def test_some_files_fail_and_the_exit_code_says_so(tmp_path: Path) -> None:
    small = [make_file(tmp_path, f"s{i}.bin", 1000)[0] for i in range(3)]
    big, _ = make_file(tmp_path, "too-big.bin", 5000)
    with ReferenceServer(tmp_path / "srv", tokens={ALICE: "alice"}, max_upload_size=4096) as server:
        done = run("upload", *map(str, small), str(big), env=against(server))
    assert done.returncode == 1
    assert "3 of 4 files uploaded" in done.stderr and "3 failed" not in done.stderr
    assert f"{big}: PayloadTooLargeError: 413" in done.stderr and "Traceback" not in done.stderr


def test_globs(reference_server, tmp_path: Path) -> None:
    for name in ("a.zip", "b.zip", "c.txt"):
        make_file(tmp_path, name, 100)
    done = run("upload", str(tmp_path / "*.zip"), "--json", env=against(reference_server))
    assert done.returncode == 0, done.stderr
    assert sorted(Path(r["path"]).name for r in json.loads(done.stdout)["successful"]) == ["a.zip", "b.zip"]


def test_progress_bars_on_a_terminal(reference_server, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, "data.bin", 2 * 1024 * 1024)
    primary, secondary = pty.openpty()
    try:
        done = run("upload", str(path), "--chunk-size", "64KiB", env=against(reference_server), stderr=secondary)
        os.close(secondary)
        screen = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other side is closed: all read
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0
    text = screen.decode()
    assert "\x1b[J" in text and "#" * 24 in text and "1/1 files" in text and "ETA" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upload", "/no/such/file.bin"], "no such file: /no/such/file.bin"),
        (["upload", "/no/such/*.bin"], "no file matches /no/such/*.bin"),
        (["upload", "tests"], "tests is a directory: pass -r to upload the files under it"),
        (["upload", "--host", "http://127.0.0.1:9", "README.md"], "--token (or SYNAPSE_ACCESS_TOKEN) is required"),
        (["upload", "--host", "http://127.0.0.1:9", "--token", "t", "README.md"], "cannot reach the server at"),
        (["upload", "--chunk-size", "lots", "README.md"], "not a positive size"),
        (["upload", "--concurrency", "0", "README.md"], "not a positive whole number"),
        (["upload", "--concurrency", "fast", "README.md"], "not a positive whole number or 'auto': 'fast'"),
    ],
)
def test_errors_are_one_clear_line(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path, _ = make_file(tmp_path, "secret.bin", 10)
    path.chmod(0)
    done = run("upload", str(path))
    assert done.returncode == 2 and "permission denied" in done.stderr


def test_bad_token_is_one_line(reference_server) -> None:
    done = run("upload", "--host", reference_server.base_url, "--token", "wrong", "README.md")
    assert done.returncode == 2
    assert "refused the access token (401)" in done.stderr and "Traceback" not in done.stderr


def test_debug_shows_the_traceback(reference_server) -> None:
    done = run("--debug", "upload", "--host", reference_server.base_url, "--token", "wrong", "README.md")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_parse_size() -> None:
    assert parse_size("50MiB") == 50 * 1024 * 1024
    assert parse_size("64k") == 65536
    assert parse_size("1000") == 1000


def test_says_what_it_waits_for_while_the_server_is_down(reference_server, tmp_path: Path) -> None:
    """A backend answering 503 for a while: the upload waits it out, saying so, and succeeds."""
    from tests.faults import Proxy, status

    path, data = make_file(tmp_path, "data.bin", 300_000)
    down = {"requests": 6}

    def plan(index: int, method: str, target: str, headers) -> object:
        # The first contact gets through; the next requests meet a restarting backend.
        return status(503) if 1 <= index <= down["requests"] else None

    with Proxy(reference_server.base_url, plan) as proxy:
        done = run(
            "upload", str(path), "--chunk-size", "64KiB", env={**against(reference_server), "SYNAPSE_HOST": proxy.url}
        )
    assert done.returncode == 0, done.stderr
    waits = [line for line in done.stderr.splitlines() if line.startswith("waiting: ")]
    # One line per request and reason every 5 s, however many attempts in between.
    assert 1 <= len(waits) <= down["requests"]
    assert "the server answered 503; retrying in" in waits[0] and "without progress" in waits[0]
    assert f"checksum={hashlib.md5(data).hexdigest()}" in done.stdout


def test_retry_deadline_option(tmp_path: Path) -> None:
    done = run("upload", "--retry-deadline", "never", "README.md")
    assert done.returncode == 2 and "not a positive number of seconds" in done.stderr


def test_one_request_and_parallel_chunks_can_be_turned_off(reference_server, tmp_path: Path) -> None:
    """``--no-send-whole --parallel-chunks 1``: every file as chunks in order, then a finalize (proxy-counted)."""
    small, _ = make_file(tmp_path, "small.bin", 1000)
    big, data = make_file(tmp_path, "big.bin", 5 * 64 * KIB)
    seen: list[tuple[str, str | None]] = []

    def note(index: int, method: str, target: str, headers) -> None:
        seen.append((method, headers.get("synapse-out-of-order")))

    with Proxy(reference_server.base_url, note) as proxy:
        args = ["--chunk-size", "64KiB", "--concurrency", "1", "--no-send-whole", "--parallel-chunks", "1"]
        done = run("upload", str(small), str(big), *args, env={**against(reference_server), "SYNAPSE_HOST": proxy.url})
    assert done.returncode == 0, done.stderr
    uploads = [method for method, _ in seen if method in ("PUT", "POST")]
    assert uploads == ["PUT", "POST"] + ["PUT"] * 5 + ["POST"] and all(mark is None for _, mark in seen)
    assert f"checksum={hashlib.md5(data).hexdigest()}" in done.stdout
