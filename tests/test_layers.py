"""The shape of the code from above: imports run only downward, no import cycles, small files and functions.

Layers, lowest first (docs/ARCHITECTURE.md): utils.core 0, utils.ops 1, nets 2, utils.data 3, utils.eval 4,
utils.engine 5, utils.deploy 6, the top-level scripts 7 (train, predict, get_map, ablate, and yolo, the
inference API). A module may import its own layer or a lower one; nets imports nothing from utils but
utils.core. Imports inside functions count like any other.
"""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.conftest import ROOT
from tests.helpers.samples import SCRIPTS

LAYERS = {"utils.core": 0, "utils.ops": 1, "nets": 2, "utils.data": 3, "utils.eval": 4, "utils.engine": 5,
          "utils.deploy": 6}
SCRIPT_LAYER = 7
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

Import = Tuple[str, int, str]  # (importing module, line, imported module)


def project_files(root: Path = ROOT) -> Dict[str, Path]:
    """{module name: path} for every .py under nets/ and utils/ and the top-level scripts."""
    files = {name: root / f"{name}.py" for name in SCRIPTS if (root / f"{name}.py").is_file()}
    for package in ("nets", "utils"):
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def layer_of(module: str) -> Optional[int]:
    """The layer of a project module, None for modules outside the project (torch, numpy, ...)."""
    if module.split(".")[0] in SCRIPTS:
        return SCRIPT_LAYER
    if module == "utils":
        return 0  # the empty package above the layers
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def _resolve(name: str, known: set) -> str:
    """The project module `name` stands for: itself, or the longest known module it starts with."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return name


def imports_of(module: str, source: str, known: set, is_package: bool = False) -> List[Import]:
    """Every import of a project module in `source`, at any depth (functions, classes, if-blocks)."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from utils.data import demo_data` imports the module utils.data.demo_data
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            target = _resolve(name, known)
            if layer_of(target) is not None:
                found.append((module, node.lineno, target))
    return found


def upward_imports(imports: List[Import]) -> List[str]:
    """The imports that break the layering, one readable line each."""
    bad = []
    for module, line, target in imports:
        src, dst = layer_of(module), layer_of(target)
        if dst > src:
            bad.append(f"{module}:{line} imports {target} (layer {src} -> layer {dst}); imports must go down")
        elif module.split(".")[0] in ("nets", "utils") and target.split(".")[0] in SCRIPTS:
            bad.append(f"{module}:{line} imports the script/API module {target}; utils and nets never import it")
        elif module.split(".")[0] == "nets" and target.startswith("utils") and layer_of(target) != 0:
            bad.append(f"{module}:{line} imports {target}; nets imports nothing from utils but utils.core")
    return bad


def import_cycles(imports: List[Import]) -> List[List[str]]:
    """Each group of modules that import one another in a ring (Tarjan's strongly connected components)."""
    graph: Dict[str, set] = {}
    for module, _, target in imports:
        graph.setdefault(module, set())
        graph.setdefault(target, set())
        if target != module:
            graph[module].add(target)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def check_sources(sources: Dict[str, str], packages: frozenset = frozenset()) -> Tuple[List[str], List[List[str]]]:
    """(upward imports, import cycles) of {module name: source text}."""
    known = set(sources)
    imports = [imp for module, text in sources.items() for imp in imports_of(module, text, known, module in packages)]
    return upward_imports(imports), import_cycles(imports)


def _tree() -> Tuple[Dict[str, str], frozenset]:
    files = project_files()
    packages = frozenset(m for m, p in files.items() if p.name == "__init__.py")
    return {m: p.read_text(encoding="utf-8") for m, p in files.items()}, packages


def _cycle_lines(sources: Dict[str, str], cycles: List[List[str]], packages: frozenset) -> List[str]:
    """Each cycle with the import lines that close it."""
    known = set(sources)
    out = []
    for group in cycles:
        members = set(group)
        edges = [f"{m}:{line} -> {t}" for m in group for m, line, t in imports_of(m, sources[m], known, m in packages)
                 if t in members and t != m]
        out.append(" | ".join(edges))
    return out


def test_every_module_has_a_layer():
    assert all(layer_of(module) is not None for module in project_files()), "a module outside the layer table"


def test_imports_only_run_downward():
    sources, packages = _tree()
    upward, _ = check_sources(sources, packages)
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycles():
    sources, packages = _tree()
    _, cycles = check_sources(sources, packages)
    assert not cycles, "import cycles:\n" + "\n".join(_cycle_lines(sources, cycles, packages))


def test_checker_catches_an_upward_import_inside_a_function():
    sources = {"utils.ops.boxes": "import torch\n\n\ndef f():\n    from utils.engine.loss import YOLOLoss\n",
               "utils.engine.loss": "from utils.ops.boxes import f\n"}
    upward, cycles = check_sources(sources)
    assert upward == ["utils.ops.boxes:5 imports utils.engine.loss (layer 1 -> layer 5); imports must go down"]
    assert cycles == [["utils.engine.loss", "utils.ops.boxes"]]


@pytest.mark.parametrize("source, message", [
    ("from utils.ops import boxes\n", "nets imports nothing from utils but utils.core"),
    ("import yolo\n", "layer 2 -> layer 7"),
])
def test_checker_catches_nets_reaching_past_core(source, message):
    sources = {"nets.yolo": source, "utils.ops.boxes": "", "yolo": ""}
    upward, _ = check_sources(sources)
    assert len(upward) == 1 and message in upward[0]


def test_checker_allows_downward_and_same_layer_imports():
    sources = {"utils.data.voc": "from utils.data import layouts\nfrom . import annotations\nimport numpy\n",
               "utils.data.layouts": "from utils.core.paths import REPO_ROOT\n", "utils.data.annotations": "",
               "utils.core.paths": "", "utils.data": "", "nets.darknet": "from utils.core.fileio import atomic_open\n",
               "utils.core.fileio": ""}
    assert check_sources(sources, frozenset({"utils.data"})) == ([], [])
    assert imports_of("utils.data.voc", sources["utils.data.voc"], set(sources))[1] == (
        "utils.data.voc", 2, "utils.data.annotations")


def size_offenders(files: Dict[str, Path]) -> List[str]:
    """Files over MAX_FILE_LINES lines and functions over MAX_FUNCTION_LINES lines, one line each."""
    out = []
    for path in files.values():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT).as_posix()
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            out.append(f"{where}: {lines} lines (max {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{where}:{node.lineno} {node.name}(): {length} lines (max {MAX_FUNCTION_LINES})")
    return out


def test_files_and_functions_are_small():
    offenders = size_offenders(project_files())
    assert not offenders, "too long:\n" + "\n".join(offenders)


def test_inference_does_not_import_the_training_engine():
    """yolo.py, evaluation's detect, CAM and export read weights through nets/checkpoint.py, not utils.engine."""
    import subprocess
    import sys
    code = ("import sys, yolo, utils.eval.detect, utils.deploy.cam, utils.deploy.export, utils.deploy.quantize\n"
            "print(sorted(m for m in sys.modules if m == 'utils.engine' or m.startswith('utils.engine.')))")
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.strip() == "[]", f"inference imports the training engine: {found.stdout.strip()}"
