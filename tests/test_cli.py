"""The synapse-upload command line, driven as a user would: a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synapse_sdk.cli import parse_size
from tests.conftest import ALICE, make_file

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "synapse_sdk.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=120,
    )


def test_upload_with_no_host_uses_an_embedded_server(tmp_path: Path) -> None:
    path, data = make_file(tmp_path, "data.bin", 300_000)
    done = run("upload", str(path), "--chunk-size", "64KiB")
    assert done.returncode == 0, done.stderr
    assert "reference server" in done.stderr
    assert f"checksum={hashlib.md5(data).hexdigest()}" in done.stdout and "id=1" in done.stdout


def test_json_output_against_a_given_host(reference_server, tmp_path: Path) -> None:
    files = [make_file(tmp_path, f"f{i}.bin", 1000 * (i + 1)) for i in range(3)]
    done = run(
        "upload",
        *(str(p) for p, _ in files),
        "--json",
        env={"SYNAPSE_HOST": reference_server.base_url, "SYNAPSE_ACCESS_TOKEN": ALICE},
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["checksum"] for r in results] == [hashlib.md5(d).hexdigest() for _, d in files]
    assert [r["size"] for r in results] == [len(d) for _, d in files]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upload", "/no/such/file.bin"], "no such file: /no/such/file.bin"),
        (["upload", "--host", "http://127.0.0.1:9", "README.md"], "--token (or SYNAPSE_ACCESS_TOKEN) is required"),
        (["upload", "--chunk-size", "lots", "README.md"], "not a positive size"),
    ],
)
def test_errors_are_one_clear_line(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_bad_token_is_reported_without_traceback(reference_server) -> None:
    done = run("upload", "--host", reference_server.base_url, "--token", "wrong", "README.md")
    assert done.returncode == 1
    assert "AuthenticationError: 401" in done.stderr and "Traceback" not in done.stderr


def test_parse_size() -> None:
    assert parse_size("50MiB") == 50 * 1024 * 1024
    assert parse_size("64k") == 65536
    assert parse_size("1000") == 1000
