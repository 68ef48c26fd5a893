"""The layers of ARCHITECTURE.md hold: every module of the four folders imports only its own layer and the
layers above it in the table (module-level imports, imports inside functions, lazy export tables and module
names handed to importlib), the Hub payload imports only what a remote-code user has, and every path the page
names exists. Read from the source with ast: nothing is imported."""

import ast
import configparser
import glob
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
# Third-party packages a payload module may import: what loading a saved model with trust_remote_code needs.
PAYLOAD_THIRD_PARTY = {"torch", "transformers", "numpy", "PIL"}
MODULE_NAME = re.compile(r"tag2text(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _layer_table() -> list[tuple[int, str, str, str]]:
    """``(rank, layer, folder, package)`` rows of the page's layer table."""
    rows = re.findall(r"^\| (\d) \| (\w+) \| `([\w./]+)/` \| `([\w.]+)` \|", ARCHITECTURE, flags=re.M)
    return [(int(rank), layer, folder, package) for rank, layer, folder, package in rows]


LAYERS = _layer_table()


def _module_name(path: Path) -> str:
    for _, _, folder, package in LAYERS:
        root = REPO / folder
        if root in path.parents:
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join([package, *parts])
    raise AssertionError(f"{path} is in no layer")


def _layer_of(module: str) -> tuple[int, str] | None:
    """``(rank, layer)`` of a ``tag2text`` module: the longest package of the table that holds it."""
    best = None
    for rank, layer, _, package in LAYERS:
        if module == package or module.startswith(package + "."):
            if best is None or len(package) > len(best[2]):
                best = (rank, layer, package)
    return best[:2] if best else None


def _modules() -> dict[str, Path]:
    found = {}
    for _, _, folder, _ in LAYERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve(name: str, level: int, module: str, path: Path) -> str:
    if not level:
        return name
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _relative(text: str) -> tuple[str, int]:
    stripped = text.lstrip(".")
    return stripped, len(text) - len(stripped)


def imports_of(module: str, path: Path) -> list[tuple[str, int, str]]:
    """``(target module, line, how)`` of every import in the file, wherever it stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assigned = {}  # module-level NAME = {...} (export tables handed to lazy_exports by name)
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned[target.id] = node.value
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, "import") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, module, path)
            found.append((target, node.lineno, "from-import"))
            if not node.module:  # from . import x: x may be a module
                found += [(f"{target}.{alias.name}", node.lineno, "from-import") for alias in node.names]
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name == "lazy_exports" and len(node.args) >= 2:
                table = node.args[1]
                table = assigned.get(table.id) if isinstance(table, ast.Name) else table
                assert isinstance(table, ast.Dict), f"{path}:{node.lineno}: export table not found"
                for value in table.values:
                    text, level = _relative(value.value)
                    found.append((_resolve(text, level, module, path), value.lineno, "lazy export"))
            elif name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
                text, level = _relative(node.args[0].value)
                found.append((_resolve(text, level, module, path), node.lineno, "importlib"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.fullmatch(node.value):
            if node.value in MODULES:  # a module named in a table (the CLI's commands) and imported by name
                found.append((node.value, node.lineno, "module name"))
    return found


def test_the_table_is_the_package_layout():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    mapping = dict(line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines())
    assert [rank for rank, *_ in LAYERS] == [1, 2, 3, 4]
    assert {package: folder for _, _, folder, package in LAYERS} == mapping
    declared = set(config["options"]["packages"].split())
    for path in MODULES.values():
        if path.name == "__init__.py":
            assert _module_name(path) in declared, f"{path.parent} is a package missing from setup.cfg packages"


def test_every_path_the_page_names_exists():
    named = {name for name in re.findall(r"`([\w./*-]+)`", ARCHITECTURE) if "/" in name}
    assert len(named) > 20
    missing = [name for name in sorted(named) if not glob.glob(str(REPO / name))]
    assert not missing, f"ARCHITECTURE.md names paths that do not exist: {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_up_the_table(module):
    path = MODULES[module]
    rank, layer = _layer_of(module)
    wrong = []
    for target, line, how in imports_of(module, path):
        placed = _layer_of(target)
        if target == "tag2text" or placed is None:
            if target.split(".")[0] == "tag2text" and target != "tag2text":
                wrong.append(f"line {line}: {how} of {target}, a module of no layer")
            continue
        if placed[0] > rank and not (module == "tag2text" and how == "lazy export"):  # the front door, below
            wrong.append(f"line {line}: {how} of {target} ({placed[1]}, below {layer} in the table)")
    assert not wrong, f"{path.relative_to(REPO)}: " + "; ".join(wrong)


def test_no_two_modules_import_each_other():
    """The modules form no import cycle, counting imports inside functions too (caption_command, annotation_run
    and onnx_caption once imported each other): each can be read after the modules it builds on."""
    edges = {module: {target for target, _, how in imports_of(module, path)
                      if target in MODULES and target != module and how in ("import", "from-import")}
             for module, path in MODULES.items()}
    cycles, order, low, stack, counter = [], {}, {}, [], [0]

    def visit(module):  # Tarjan's strongly connected components
        order[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        for target in sorted(edges[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in order:
            visit(module)
    assert not cycles, f"modules that import each other (directly or round a loop): {cycles}"


def _payload_roots() -> list[str]:
    paragraph = ARCHITECTURE.split("**The payload**", 1)[1].split("\n- ", 1)[0]
    return re.findall(r"`modeling_tag2text/(\w+)\.py`", paragraph)


def _payload() -> dict[str, Path]:
    """The root modules and everything they import with a single dot, anywhere in the file (what transformers
    copies into a saved directory)."""
    folder = REPO / "modeling_tag2text"
    todo, seen = list(_payload_roots()), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = folder / f"{name}.py"
        for node in ast.walk(ast.parse(seen[name].read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                todo.append(node.module)
    return seen


def test_the_payload_imports_only_what_a_remote_code_user_has():
    payload = _payload()
    assert {"configuration_tag2text", "modeling_tag2text", "processing_tag2text", "text_conventions"} <= set(payload)
    standard = set(sys.stdlib_module_names)
    wrong = []
    for name, path in sorted(payload.items()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 1:
                target = "." * node.level + (node.module or "")
                wrong.append(f"{name}:{node.lineno} imports {target} (outside the folder)")
            elif isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
                wrong.append(f"{name}:{node.lineno}: 'from . import' (transformers copies only 'from .x import')")
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for top in {n.split(".")[0] for n in names}:
                    if top not in standard and top not in PAYLOAD_THIRD_PARTY:
                        wrong.append(f"{name}:{node.lineno} imports {top}")
    assert not wrong, "; ".join(wrong)


def test_the_checks_see_an_upward_edge_and_a_lazy_one(tmp_path):
    """The walker finds imports inside functions and in export tables, relative ones resolved."""
    source = ("def f():\n    from ..hub.cli_args import UsageError\n"
              "__getattr__, __dir__ = lazy_exports(__name__, {'X': '..training.data'})\n"
              "COMMANDS = {'a': 'tag2text.hub.cli'}\n")
    probe = tmp_path / "example.py"
    probe.write_text(source)
    found = {(target, how) for target, _, how in imports_of("tag2text.processing.example", probe)}
    assert {("tag2text.hub.cli_args", "from-import"), ("tag2text.training.data", "lazy export"),
            ("tag2text.hub.cli", "module name")} <= found
    assert _layer_of("tag2text.hub.cli_args")[0] > _layer_of("tag2text.processing.example")[0]
