"""The resume journal: round trips, atomic writes under kill -9, locking."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.journal import Journal, JournalEntry, default_journal_dir
from engine.source import FileIdentity

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent

entries = st.builds(
    JournalEntry,
    server=st.text(max_size=50),
    path=st.text(max_size=50),
    identity=st.builds(FileIdentity, *(st.integers(0, 2**63 - 1) for _ in range(4))),
    url=st.text(max_size=80),
    upload_id=st.one_of(st.integers(0, 2**62), st.uuids().map(str)),
    chunk_size=st.integers(1, 2**40),
    offset=st.integers(0, 2**50),
    chunks=st.lists(
        st.tuples(st.integers(0, 2**40), st.integers(0, 2**40), st.binary(min_size=16, max_size=16)).map(
            lambda c: [c[0], c[1], c[2].hex()]
        ),
        max_size=20,
    ),
    md5_state=st.one_of(st.none(), st.binary(max_size=120).map(lambda b: __import__("base64").b64encode(b).decode())),
    md5_offset=st.integers(0, 2**50),
)


@given(entry=entries)
def test_entry_round_trips(entry: JournalEntry) -> None:
    assert JournalEntry.from_json(entry.to_json()) == entry


def test_save_load_remove(tmp_path: Path) -> None:
    slot = Journal(tmp_path).slot("http://s/chunked_upload/", "/data/a.bin")
    assert slot.load() is None
    entry = JournalEntry("http://s/", "/data/a.bin", FileIdentity(1, 2, 3, 4), "http://s/u/1/", 1, 10, offset=5)
    slot.save(entry)
    assert slot.load() == entry
    slot.remove()
    assert slot.load() is None
    slot.release()


def test_unreadable_entry_is_dropped(tmp_path: Path, caplog) -> None:
    slot = Journal(tmp_path).slot("s", "/f")
    slot.path.write_text('{"version": 1, "server": "s"')  # torn by something other than us
    assert slot.load() is None and not slot.path.exists()
    assert "unreadable journal entry" in caplog.text
    slot.release()


def test_one_upload_at_a_time_per_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = journal.slot("s", "/f")
    assert first is not None
    assert journal.slot("s", "/f") is None  # held, even within one process
    other = journal.slot("s", "/g")
    assert other is not None
    first.release()
    again = journal.slot("s", "/f")
    assert again is not None
    for slot in (other, again):
        slot.release()


def test_default_folder_can_be_set_or_turned_off(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNAPSE_UPLOAD_JOURNAL", str(tmp_path))
    assert default_journal_dir() == tmp_path
    monkeypatch.setenv("SYNAPSE_UPLOAD_JOURNAL", "off")
    assert default_journal_dir() is None
    monkeypatch.delenv("SYNAPSE_UPLOAD_JOURNAL")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_journal_dir() == tmp_path / "synapse-upload" / "journal"


SAVE_FOREVER = """
import sys
from engine.journal import Journal, JournalEntry
from engine.source import FileIdentity
slot = Journal(sys.argv[1]).slot("s", "/f")
entry = JournalEntry("s", "/f", FileIdentity(1, 2, 3, 4), "u", 1, 10, chunks=[[0, 10, "ab" * 16]] * 200)
print("ready", flush=True)
while True:
    entry.offset += 1
    slot.save(entry)
"""


def test_kill_9_while_saving_never_breaks_the_next_run(tmp_path: Path) -> None:
    for attempt in range(12):
        process = subprocess.Popen(
            [sys.executable, "-c", SAVE_FOREVER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline() == "ready\n"
        time.sleep(0.005 * attempt)  # kill at various points of the save loop
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        slot = Journal(tmp_path).slot("s", "/f")
        entry = slot.load()
        assert entry is None or entry.offset >= 1
        slot.release()
    # Temp files of killed writers are cleared by the next one to take the entry.
    assert sorted(p.suffix for p in tmp_path.iterdir()) in ([".json", ".lock"], [".lock"])
