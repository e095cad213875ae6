"""Start the drf-chunked-upload test server (``tests.drf_server``) for tests.

``start_drf_server(directory)`` runs ``python -m tests.drf_server.serve`` in a
subprocess, waits for its ``READY <base_url> <token>`` line and returns a
``DrfServer`` handle (also a context manager). Django is imported only in the
subprocess, so the test process sees none of its import-time warnings.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class DrfServerError(RuntimeError):
    """The server subprocess died or did not become ready in time."""


class DrfServer:
    """A running server: ``base_url`` (no trailing slash), ``token``, ``stop()``."""

    def __init__(
        self,
        process: subprocess.Popen[str],
        base_url: str,
        token: str,
        stderr_path: Path,
        stderr_file: IO[str],
        stdout_reader: threading.Thread,
    ) -> None:
        self.process = process
        self.base_url = base_url
        self.token = token
        self.stderr_path = stderr_path
        self._stderr_file = stderr_file
        self._stdout_reader = stdout_reader

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and release its pipes."""
        _shutdown(self.process, self._stdout_reader, self._stderr_file)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _shutdown(process: subprocess.Popen[str], reader: threading.Thread, stderr_file: IO[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # The process is gone, so the reader hits EOF and ends; only then close
    # the pipe (closing it under a blocked reader is racy). Leaving it open
    # would raise a ResourceWarning, an error under ``-W error``.
    reader.join(timeout=STOP_TIMEOUT)
    if process.stdout is not None:
        process.stdout.close()
    stderr_file.close()


def _pump_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # Keeps draining stdout for the server's lifetime so it can never block on
    # a full pipe; None marks end of stream (the process exited).
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass  # pipe closed under us: treat as end of stream
    lines.put(None)


def start_drf_server(
    directory: Path,
    *,
    token: str | None = None,
    extra_users: Mapping[str, str] | None = None,
    timeout: float = READY_TIMEOUT,
) -> DrfServer:
    """Launch the server with its state in ``directory`` and wait until it listens.

    ``extra_users`` maps user names to token keys of further users (e.g. to
    check that one user cannot see another's uploads).
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "tests.drf_server.serve",
        "--port",
        "0",
        "--dir",
        str(directory),
    ]
    if token is not None:
        cmd += ["--token", token]
    for name, key in (extra_users or {}).items():
        cmd += ["--extra-user", f"{name}:{key}"]

    env = dict(os.environ)
    # ``tests.drf_server`` must import from the repository root whatever the
    # caller's cwd and sys.path are.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    # The server's warnings are not the test process's business.
    env.pop("PYTHONWARNINGS", None)

    # stderr goes to a file, not a pipe: nobody has to drain it, and it is
    # still there to quote if the server dies.
    stderr_path = directory / "server.stderr.log"
    stderr_file = stderr_path.open("w", encoding="utf-8")
    process = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(
        target=_pump_lines,
        args=(process.stdout, lines),
        name="drf-server-stdout",
        daemon=True,
    )
    reader.start()

    def fail(reason: str) -> DrfServerError:
        _shutdown(process, reader, stderr_file)
        stderr = stderr_path.read_text(encoding="utf-8", errors="replace").strip()
        return DrfServerError(
            f"drf test server {reason} (exit code {process.returncode}); "
            f"command: {' '.join(cmd)}\n--- stderr ---\n{stderr or '(empty)'}"
        )

    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise fail(f"did not print READY within {timeout:g} s") from None
    parts = (line or "").split()
    if len(parts) != 3 or parts[0] != "READY":
        raise fail("died before becoming ready" if line is None else f"printed {line!r} instead of READY")
    return DrfServer(process, parts[1], parts[2], stderr_path, stderr_file, reader)
