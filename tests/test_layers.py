"""The layering holds: import contracts (``lint-imports``), and the server's stores implement one interface."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from synapse_sdk.server.discard import DiscardStore
from synapse_sdk.server.storage import ChunkWriter, Owner, UploadStore
from synapse_sdk.server.store import Store
from tools.import_contracts import cycles, private_name_imports

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_clients_engine_and_server_have_no_import_cycle() -> None:
    # As [tool.importlinter] says: imports for type checkers only never run.
    graph = grimp.build_graph("engine", "synapse_sdk", exclude_type_checking_imports=True)
    outside_the_cli = [group for group in cycles(graph) if not all(m.startswith("synapse_sdk.cli") for m in group)]
    assert outside_the_cli == []


@pytest.fixture
def tangled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package whose __init__ imports a submodule that imports the package back, and borrows a private name."""
    package = tmp_path / "tangled_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("def run():\n    from tangled_pkg.sub import work\n    return work()\n")
    (package / "sub.py").write_text("from tangled_pkg import run\nfrom tangled_pkg.helpers import _secret\n")
    (package / "helpers.py").write_text("_secret = 1\n")
    (package / "_private.py").write_text("")
    (package / "fine.py").write_text("from tangled_pkg import _private\nfrom tangled_pkg.helpers import _secret as s\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tangled_pkg"


def test_a_cycle_through_a_package_init_is_found(tangled: str) -> None:
    # acyclic_siblings would not see it: the package and its own submodule are not siblings.
    assert cycles(grimp.build_graph(tangled)) == [["tangled_pkg", "tangled_pkg.sub"]]


def test_a_borrowed_private_name_is_found_and_a_private_module_is_not(tangled: str) -> None:
    found = private_name_imports(sorted(grimp.build_graph(tangled).modules))
    assert found == [
        ("tangled_pkg.fine", 2, "tangled_pkg.helpers._secret"),
        ("tangled_pkg.sub", 2, "tangled_pkg.helpers._secret"),
    ]


@pytest.mark.parametrize("store_class", [Store, DiscardStore])
def test_both_stores_implement_the_store_interface(store_class: type[Store], tmp_path: Path) -> None:
    members = [name for name in dir(UploadStore) if not name.startswith("_") and callable(getattr(UploadStore, name))]
    for name in members:
        wanted = list(inspect.signature(getattr(UploadStore, name)).parameters)
        assert list(inspect.signature(getattr(store_class, name)).parameters) == wanted, name
    store = store_class(tmp_path / "data")
    try:
        assert isinstance(store, UploadStore)
        owner = Owner("alice")
        upload = store.reserve(owner, 5)
        with store.append(upload, limit=5) as chunk:
            assert isinstance(chunk, ChunkWriter)
            chunk.write(memoryview(b"hello"))
            chunk.settle()
            upload = store.commit(chunk, filename="h.txt")
        with store.locked(upload.id):
            done = store.complete(upload, "5d41402abc4b2a76b9719d911017c592")
        assert done.complete and store.get(upload.id, owner) == done and store.stats()["uploads_created"] == 1
        # The one difference: what the store keeps of the bytes.
        kept = store.completed_path(upload.id)
        assert (kept.read_bytes() == b"hello") if store_class is Store else not kept.exists()
    finally:
        store.close()
