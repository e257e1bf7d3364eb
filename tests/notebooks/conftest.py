"""Wall time of each executed notebook, handed to the report of the test that ran it."""

from __future__ import annotations

import pytest

from tests.conftest import NOTEBOOK_WALL_TIME

WALL_TIMES: dict[str, float] = {}  # filled by test_notebooks.run in the process that runs the notebook


@pytest.fixture(autouse=True)
def _report_wall_times(request: pytest.FixtureRequest):
    """User properties travel from an xdist worker to the controller, which prints them."""
    yield
    while WALL_TIMES:
        request.node.user_properties.append((NOTEBOOK_WALL_TIME, WALL_TIMES.popitem()))
