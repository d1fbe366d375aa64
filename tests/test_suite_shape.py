"""The shape of the test suite: shared helpers live in tests/conftest.py and tests/helpers/, never in a test file
that another imports; the fixtures and factories every file needs are defined once; the slow marker is registered."""
import ast
import configparser
from pathlib import Path

from tests.conftest import ROOT

TESTS = ROOT / "tests"
# each defined in exactly one file: the VOC writer and its datasets, the checkpoint factory, the fixtures
SHARED = ("write_voc", "write_tiny_voc", "write_map_voc", "write_scene_voc", "make_checkpoint",
          "save_random_checkpoint", "random_bn", "scan_cache", "tiny_voc", "map_voc", "voc_to_coco", "run_args")


def suite_files(tests: Path = TESTS):
    return sorted(p for p in tests.rglob("*.py") if "fixtures" not in p.relative_to(tests).parts)


def imports_of_test_files(path: Path):
    """[(line, module)] for each import of a test file (tests/test_*.py) in `path`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .test_x import y / from . import test_x, relative to tests/
                base = ".".join(["tests"] + ([base] if base else []))
            names = [f"tests.{a.name}" for a in node.names] if base == "tests" else [base]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] == "tests" and n.split(".")[1:2] != []
                  and n.split(".")[1].startswith("test_")]
    return found


def test_no_test_file_imports_another():
    found = [f"{p.relative_to(ROOT)}:{line} imports {name}"
             for p in suite_files() for line, name in imports_of_test_files(p)]
    assert not found, ("a test file imports another test file; move what it shares to tests/helpers/ (or a fixture "
                       "to tests/conftest.py) and import it from there:\n" + "\n".join(found))


def definitions(tests: Path = TESTS):
    """{name: [file, ...]} of the top-level functions and classes of every file under tests/."""
    found = {}
    for path in suite_files(tests):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                found.setdefault(node.name, []).append(str(path.relative_to(tests)))
    return found


def test_shared_helpers_and_fixtures_are_defined_once():
    defined = definitions()
    twice = {name: defined.get(name, []) for name in SHARED if len(defined.get(name, [])) != 1}
    assert not twice, f"expected each shared helper defined in one file under tests/, found {twice}: keep one " \
                      f"(tests/helpers/ or tests/conftest.py) and import or request it"


def scan_cache_copies(tests: Path = TESTS):
    """Fixtures outside tests/conftest.py whose whole body points YOLO_SCAN_CACHE somewhere: copies of scan_cache."""
    found = []
    for path in suite_files(tests):
        if path.name == "conftest.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            body = [n for n in getattr(node, "body", [])
                    if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]  # not the docstring
            fixture = any("fixture" in ast.unparse(d) for d in getattr(node, "decorator_list", []))
            if fixture and len(body) == 1 and "YOLO_SCAN_CACHE" in ast.unparse(body[0]):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return found


def test_the_scan_cache_fixture_is_the_conftest_one():
    found = scan_cache_copies()
    assert not found, ("expected the scan cache fixture only in tests/conftest.py (request scan_cache, or "
                       "pytestmark = pytest.mark.usefixtures(\"scan_cache\")), found copies:\n" + "\n".join(found))


def test_the_slow_marker_is_registered(pytestconfig):
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    assert ini.has_option("pytest", "markers"), "expected pytest.ini with a [pytest] markers list, found none"
    registered = [line.split(":")[0].strip() for line in pytestconfig.getini("markers")]
    assert "slow" in registered, f"expected the slow marker registered in pytest.ini, found {registered}"
    marked = [p.name for p in suite_files() if "@pytest.mark.slow" in p.read_text(encoding="utf-8")]
    assert marked, "expected the end-to-end runs (training, ablations, exports) marked @pytest.mark.slow, found none"
    assert "addopts" not in ini["pytest"] or "slow" not in ini["pytest"]["addopts"], \
        "pytest.ini deselects the slow tests by default: `python -m pytest` (CI) must run them all"
