"""The test tiers (``tests/tiers.py``): a unit test that opens a socket fails; the tiers select apart.

Each case runs a small test file in a pytest run of its own (``pytester``),
with the tiers plugin loaded as the suite loads it. This module is itself
``integration``: its inner integration tests really bind sockets.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

INI = """
[pytest]
addopts = --strict-markers -p tests.tiers
markers =
    unit: opens no socket
    integration: real servers
"""

BINDS = """
import socket

def bind():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def test_a_unit_test_that_binds_fails_and_says_how_to_fix_it(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_it=BINDS + "import pytest\npytestmark = pytest.mark.unit\ndef test_it():\n    bind()\n")
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*SocketInUnitTest*socket.bind(('127.0.0.1', 0))*unit tests open no socket*"])


def test_a_unit_test_fails_even_when_the_code_swallows_the_error(inner: pytest.Pytester) -> None:
    code = "import pytest, socket\npytestmark = pytest.mark.unit\n"
    code += "def test_it():\n    try:\n        socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
    code += "    except Exception:\n        pass\n"
    inner.makepyfile(test_it=code)
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*is marked unit but tried to open a socket 1 time(s); the first:*", "*connect*"])


def test_a_unit_fixture_that_binds_is_an_error_in_setup(inner: pytest.Pytester) -> None:
    code = BINDS + "import pytest\npytestmark = pytest.mark.unit\n"
    code += "@pytest.fixture\ndef server():\n    bind()\n\ndef test_it(server):\n    pass\n"
    inner.makepyfile(test_it=code)
    result = inner.runpytest()
    result.assert_outcomes(errors=1)


def test_integration_and_unmarked_tests_may_bind_and_unmarked_counts_as_integration(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_marked=BINDS + "import pytest\npytestmark = pytest.mark.integration\ndef test_it():\n    bind()\n",
        test_unmarked=BINDS + "def test_it():\n    bind()\n",
        test_pure="import pytest\npytestmark = pytest.mark.unit\ndef test_it():\n    assert 1 + 1 == 2\n",
    )
    inner.runpytest().assert_outcomes(passed=3)
    inner.runpytest("-m", "integration").assert_outcomes(passed=2, deselected=1)
    unit = inner.runpytest("-m", "unit")
    unit.assert_outcomes(passed=1, deselected=2)
    unit.stdout.no_fnmatch_line("*test_unmarked*")


def test_sockets_work_again_after_a_unit_test(inner: pytest.Pytester) -> None:
    unit = "import pytest, socket\npytestmark = pytest.mark.unit\ndef test_a():\n    assert True\n"
    inner.makepyfile(
        test_a=unit,
        test_b=BINDS + "def test_b():\n    bind()\n",
    )
    inner.runpytest("-p", "no:randomly").assert_outcomes(passed=2)
    # And in this process, after the inner unit tests ran under the guard.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))


def test_a_test_with_two_tiers_is_refused(inner: pytest.Pytester) -> None:
    code = "import pytest\npytestmark = [pytest.mark.unit, pytest.mark.integration]\ndef test_it():\n    pass\n"
    inner.makepyfile(test_it=code)
    result = inner.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_it.py::test_it is marked both unit and integration: a test has one tier*"])


def test_every_test_module_names_its_tier_at_its_top() -> None:
    # A module without one counts as integration, so a socket-free module
    # that forgets its mark silently drops out of ``pytest -m unit``.
    tier = re.compile(r"^pytestmark = (\[)?pytest\.mark\.(unit|integration)\b", re.MULTILINE)
    modules = sorted(Path(__file__).parent.glob("test_*.py"))
    assert modules
    assert [module.name for module in modules if not tier.search(module.read_text(encoding="utf-8"))] == []
