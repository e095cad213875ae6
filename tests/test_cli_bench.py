"""``synapse-upload bench``, driven as a user would (a subprocess), and the rounds it is timed with.

The runs are tiny (8 MiB, one timed round): these tests check what the
command prints and writes, never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synapse_sdk.cli.benchmark import TimedCase, run_rounds
from synapse_sdk.server import ReferenceServer
from tests.conftest import ALICE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
TINY = ("--size", "8MiB", "--rounds", "1")
CASES = ("engine (", "baseline (published SDK algorithm)", "hashlib.md5, one core")


def run(*args: str, python: tuple[str, ...] = ("-m", "synapse_sdk.cli")) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    return subprocess.run(
        [sys.executable, *python, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=300,
    )


def test_table_with_the_three_cases_and_the_ratios_and_a_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "out.png"
    done = run("bench", *TINY, "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    for case in CASES:
        assert case in done.stdout
    assert "engine / baseline:" in done.stdout and "engine / one core's MD5:" in done.stdout
    assert "data on tmpfs" in done.stdout or "data in a temporary directory" in done.stdout
    assert "engine.NATIVE=" in done.stdout and "cores" in done.stdout
    # Progress goes to stderr, so stdout is only the table.
    assert "round 1/1" in done.stderr and "round 1/1" not in done.stdout
    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_json_has_the_fields_and_nothing_is_left_behind(tmp_path: Path) -> None:
    done = run("bench", *TINY, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["size"] == 8 * 1024 * 1024 and report["rounds"] == 1 and report["warmup_rounds"] == 1
    assert set(report["cases"]) == {"engine", "baseline", "md5"}
    for case in report["cases"].values():
        assert case["min_mbps"] <= case["median_mbps"] <= case["max_mbps"] and len(case["seconds"]) == 1
    assert set(report["ratios"]) == {"engine_to_baseline", "engine_to_md5"}
    assert report["ratios"]["engine_to_baseline"] == pytest.approx(
        report["cases"]["engine"]["median_mbps"] / report["cases"]["baseline"]["median_mbps"], rel=0.01
    )
    assert set(report["machine"]) == {"cpu", "cores", "python", "engine_native"}
    assert report["server"]["embedded"] is True
    # The random file's and the server's temporary directories are gone.
    for line in done.stderr.splitlines():
        for word in line.split():
            if "synapse-bench-" in word:
                assert not Path(word).exists(), line


def test_discard_server_and_chunk_digest(tmp_path: Path) -> None:
    done = run("bench", *TINY, "--json", "--discard", "--chunk-digest", "xxh3")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["server"]["discard"] is True
    assert "chunk digest xxh3" in report["cases"]["engine"]["label"]


def test_against_a_given_host_nothing_is_cleared(tmp_path: Path) -> None:
    with ReferenceServer(tmp_path / "data", tokens={ALICE: "alice"}) as server:
        done = run("bench", *TINY, "--json", "--host", server.base_url, "--token", ALICE)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["server"] == {"url": server.base_url, "embedded": False, "data_on_tmpfs": None, "discard": False}
        # Two uploads per upload case (a warm-up and a timed round), all kept.
        assert len(list((tmp_path / "data" / "uploads").glob("*"))) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "lots"], "--size: not a positive size: 'lots'"),
        (["--size", "0"], "--size: not a positive size"),
        (["--rounds", "0"], "--rounds: not a positive whole number"),
        (["--host", "http://127.0.0.1:9"], "--token (or SYNAPSE_ACCESS_TOKEN) is required with --host"),
    ],
)
def test_a_bad_argument_is_one_clear_line(args: list[str], message: str) -> None:
    done = run("bench", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"synapse-upload: {message}"), done.stderr
    assert done.stdout == ""


def test_plot_without_matplotlib_says_how_to_get_it_before_measuring(tmp_path: Path) -> None:
    # None in sys.modules makes `import matplotlib` fail as if it were not installed.
    script = "import sys; sys.modules['matplotlib'] = None; from synapse_sdk.cli import main; sys.exit(main())"
    done = run("bench", *TINY, "--plot", str(tmp_path / "out.png"), python=("-c", script))
    assert done.returncode == 2
    assert done.stderr.strip() == "synapse-upload: --plot needs matplotlib: pip install 'synapse-upload[plot]'"
    assert not (tmp_path / "out.png").exists()


def test_rounds_warm_up_every_case_then_take_turns() -> None:
    calls: list[str] = []
    ticks = iter(range(1000))

    def case(name: str, seconds: int) -> TimedCase:
        def work() -> None:
            calls.append(name)
            for _ in range(seconds - 1):
                next(ticks)

        return TimedCase(name, name.upper(), work, setup=lambda: calls.append(f"setup {name}"))

    results = run_rounds([case("a", 1), case("b", 4)], 8_000_000, rounds=3, warmup=1, clock=lambda: float(next(ticks)))
    assert calls == ["setup a", "a", "setup b", "b"] + ["setup a", "a", "setup b", "b"] * 3
    assert results["a"].seconds == (1.0, 1.0, 1.0) and results["b"].seconds == (4.0, 4.0, 4.0)
    assert results["b"].median_mbps == pytest.approx(2.0) and results["a"].max_mbps == pytest.approx(8.0)
    with pytest.raises(ValueError, match="rounds must be"):
        run_rounds([case("a", 1)], 1, rounds=0)
