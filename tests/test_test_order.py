"""tests/conftest.py's file order: the files it names first exist (a renamed file would silently
fall back to xdist's order), and the collected tests keep their order within each file."""

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent
_SPEC = importlib.util.spec_from_file_location("tests_conftest_order", HERE / "conftest.py")
conftest = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(conftest)


def test_every_slowest_file_exists():
    missing = [name for name in conftest.SLOWEST_FILES if not (HERE / name).is_file()]
    assert not missing, f"tests/conftest.py SLOWEST_FILES names files that are gone: {missing}"


class _Item:
    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name


def test_listed_files_first_then_by_test_count_keeping_the_order_within_a_file():
    slow = HERE / conftest.SLOWEST_FILES[1]
    many, few = HERE / "test_a_many.py", HERE / "test_b_few.py"
    items = [_Item(few, "f1"), _Item(many, "m1"), _Item(slow, "s1"), _Item(many, "m2"), _Item(slow, "s2")]
    items += [_Item(many, "m3"), _Item(HERE / conftest.SLOWEST_FILES[0], "z1")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["z1", "s1", "s2", "m1", "m2", "m3", "f1"]
