"""Peak memory of an upload does not grow with the file's size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ALICE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of
# pytest would report the parent's peak instead of its own.
UPLOAD_AND_REPORT_PEAK_RSS = """
import re, sys
from synapse_sdk.clients.backend import BackendClient
BackendClient(sys.argv[1], access_token=sys.argv[2]).create_chunked_upload(sys.argv[3])
with open("/proc/self/status") as status:
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) * 1024)
"""


def peak_rss_of_upload(base_url: str, path: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", UPLOAD_AND_REPORT_PEAK_RSS, base_url, ALICE, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    return int(done.stdout)


def test_peak_rss_is_flat_in_file_size(reference_server, tmp_path: Path) -> None:
    peaks = {}
    for size in (8 * MIB, 400 * MIB):
        path = tmp_path / f"{size}.bin"
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: cheap to make, read like any other file
        peaks[size] = peak_rss_of_upload(reference_server.base_url, path)
        path.unlink()
    # Fifty times the bytes, and 50 MiB chunks instead of one 8 MiB one: the
    # mapped windows are 8 MiB, so the peak may move by a window or two.
    assert peaks[400 * MIB] - peaks[8 * MIB] < 24 * MIB, peaks
    assert peaks[400 * MIB] < 80 * MIB, peaks  # the ceiling the performance issue sets
