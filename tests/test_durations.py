"""The order the xdist workers take the test files in (tests/conftest.py, longest_files_first)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from conftest import DURATIONS, FAST_SECONDS, SLOW_SECONDS, longest_files_first


@dataclass
class Item:
    nodeid: str
    markers: list[str] = field(default_factory=list)

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.markers else None


def test_the_files_go_longest_first_each_whole_and_in_its_own_order() -> None:
    items = [
        Item("tests/test_a.py::one"),
        Item("tests/test_b.py::one"),
        Item("tests/test_a.py::two"),
        Item("tests/runtime/test_c.py::one", ["slow"]),
        Item("tests/runtime/test_c.py::two[x]", ["slow"]),
        Item("tests/test_d.py::one"),
        Item("tests/test_b.py::two"),
    ]
    seconds = {"tests/test_a.py": 1.0, "tests/test_b.py": 100.0, "tests/test_d.py": 0.0}
    ordered = longest_files_first(items, seconds)
    assert [item.nodeid for item in ordered] == [
        "tests/test_b.py::one",
        "tests/test_b.py::two",
        "tests/runtime/test_c.py::one",  # not measured: two slow tests, 30 s
        "tests/runtime/test_c.py::two[x]",
        "tests/test_a.py::one",
        "tests/test_a.py::two",
        "tests/test_d.py::one",
    ]


def test_a_file_not_measured_is_expected_to_take_what_its_slow_and_fast_tests_take() -> None:
    items = [Item("tests/test_new.py::a", ["slow"]), Item("tests/test_new.py::b"), Item("tests/test_old.py::a")]
    between = SLOW_SECONDS + FAST_SECONDS
    assert [i.nodeid for i in longest_files_first(items, {"tests/test_old.py": between + 0.01})][0] == "tests/test_old.py::a"
    assert [i.nodeid for i in longest_files_first(items, {"tests/test_old.py": between - 0.01})][0] == "tests/test_new.py::a"


def test_the_stored_durations_name_test_files_with_their_seconds() -> None:
    stored = json.loads(DURATIONS.read_text())
    assert len(stored) > 50
    for path, seconds in stored.items():
        assert path.startswith("tests/") and path.endswith(".py"), path
        assert isinstance(seconds, float | int) and seconds >= 0, path
