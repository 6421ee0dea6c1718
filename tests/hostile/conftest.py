"""The hostile suite: every test is one case of docs/hostile-inputs.md, named by its id.

``@pytest.mark.case("PF-01", exit=2)`` ties a test to its row of the table: the id and the exit
code are checked against the docs by test_cases_table.py, and the ``case`` fixture hands the
exit code to the test, which asserts exactly that code.
"""

from __future__ import annotations

import pytest

from .support import Case


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "case(id, exit): a case of docs/hostile-inputs.md (its id and exit code)")


@pytest.fixture
def case(request: pytest.FixtureRequest) -> Case:
    marker = request.node.get_closest_marker("case")
    assert marker is not None, "every hostile test is a case: @pytest.mark.case(ID, exit=CODE)"
    return Case(marker.args[0], marker.kwargs["exit"])
