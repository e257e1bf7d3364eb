"""Wall time of each executed notebook, reported at the end of the run."""

from __future__ import annotations

WALL_TIMES: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter):
    if WALL_TIMES:
        terminalreporter.write_sep("-", "notebooks: wall time")
        for name, seconds in WALL_TIMES.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")
