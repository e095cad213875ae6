"""synapse-upload beside the published synapse-sdk in one environment: never a silent shadow.

Real installs in fresh virtual environments: a wheel of this package and the
published synapse-sdk wheel (``$SYNAPSE_PUBLISHED_WHEEL``, which ``.ci/run``
downloads from PyPI), installed in both orders, so that pip overwrites the
files the two share exactly as it does for a user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import synapse_sdk
from synapse_sdk.installation import conflict

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = os.environ.get("SYNAPSE_PUBLISHED_WHEEL")


def test_alone_there_is_no_conflict_and_a_version() -> None:
    assert conflict() is None
    assert synapse_sdk.__version__ == "0.1.0"


@pytest.fixture(scope="module")
def our_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(directory),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = directory.glob("synapse_upload-*.whl")
    return wheel


def environment(directory: Path, *wheels: Path) -> Path:
    """A fresh venv with ``wheels`` installed in this order (no dependencies: it borrows this one's)."""
    subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    python = directory / "bin" / "python"
    for wheel in wheels:
        install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-requires-python"]
        subprocess.run([*install, str(wheel)], check=True, capture_output=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies (urllib3, xxhash...) from the test environment; a plain path, so its .pth files stay out.
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


@pytest.mark.slow
@pytest.mark.skipif(PUBLISHED is None, reason="set SYNAPSE_PUBLISHED_WHEEL to synapse-sdk's wheel (.ci/run does)")
@pytest.mark.parametrize("last", ["synapse-sdk", "synapse-upload"])
def test_beside_synapse_sdk_the_user_is_told(our_wheel: Path, tmp_path: Path, last: str) -> None:
    published = Path(PUBLISHED)
    order = (our_wheel, published) if last == "synapse-sdk" else (published, our_wheel)
    python = environment(tmp_path / "venv", *order)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = subprocess.run(
        [str(python.parent / "synapse-upload"), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    in_place = "synapse-sdk's" if last == "synapse-sdk" else "synapse-upload's"
    message = "synapse-sdk 2026.2.17 is installed beside synapse-upload 0.1.0"
    if last == "synapse-sdk":
        # Its files are in place: the command cannot run, and says why in one line.
        assert command.returncode == 2 and message in command.stderr and "Traceback" not in command.stderr
    else:
        # Ours are in place: it runs, and says what the environment holds.
        imported = subprocess.run(
            [str(python), "-c", "import synapse_sdk"], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert command.returncode == 0 and "usage: synapse-upload" in command.stdout
        assert "InstallationConflictWarning" in imported.stderr and message in imported.stderr
    assert f"({in_place} are in place now)" in (command.stderr if last == "synapse-sdk" else imported.stderr)
