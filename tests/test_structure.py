"""The package's structure rules, checked on its source (see docs/architecture.md).

- Imports point down the layers below, never up, and never form a cycle;
  function-local imports and `importlib.import_module("tftransfer...")` count.
- Imports of tftransfer sit at the top of each file; a function may import
  only the optional or slow third-party packages listed in `LAZY_IMPORTS`.
- No module imports another module's `_private` name (a leading underscore on
  a name means "this module only"), tests included.
- Keras and TensorFlow private APIs are used in `tftransfer/_compat.py` only.
- No module is over `MAX_LINES` lines.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tftransfer"
MAX_LINES = 450

# Top to bottom. A module may import modules of its own layer's package and of
# any layer below; nothing above. Modules of one layer that belong to
# different packages are independent of each other.
LAYERS = [
    ["tftransfer.cli"],
    ["tftransfer.demos", "tftransfer.commands"],
    ["tftransfer.export", "tftransfer.evaluation"],
    ["tftransfer.transfer"],
    ["tftransfer.training"],
    ["tftransfer.feature_cache"],
    ["tftransfer.classifiers"],
    ["tftransfer.backbones"],
    ["tftransfer.data"],
    ["tftransfer.layers", "tftransfer.distribute", "tftransfer.caching", "tftransfer.baselines"],
    ["tftransfer.errors", "tftransfer.formats", "tftransfer.version", "tftransfer.files",
     "tftransfer._compat"],
]

# Third-party packages a function may import where it needs them, and why.
LAZY_IMPORTS = {
    "keras_hub": "optional (the [text] extra); imports keras-nlp models",
    "tensorflow_datasets": "imports in seconds; only dataset_from_tfds needs it",
    "tensorflow_hub": "imports tf_keras, which takes seconds; only hub URLs need it",
    "tensorflow_text": "registers ops; only the text demo's serving check needs it",
    "matplotlib": "imports in a second; only plots need it",
    "tensorflow_serving": "optional (the [serving] extra); only the warmup file needs it",
}

# The command line imports a command's module (and TensorFlow with it) when
# the command runs, so that `tftransfer --help` answers at once.
LAZY_COMMANDS = {"tftransfer.cli": ("tftransfer.demos.", "tftransfer.commands.",
                                    "tftransfer.backbones.", "tensorflow")}

PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tensorflow.core")
COMPAT = "tftransfer._compat"


def _modules():
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _is_package(name):
    return MODULES[name].name == "__init__.py"


def _resolve(module, name):
    """The tftransfer module that `from module import name` binds, or None
    for a plain name."""
    candidate = f"{module}.{name}"
    return candidate if candidate in MODULES else None


def _module_level(tree):
    """Ids of the nodes outside any function or class body."""
    found, pending = set(), list(tree.body)
    while pending:
        node = pending.pop()
        found.add(id(node))
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                 ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return found


def _imports(name, path):
    """Yields (line, imported module, imported names, at module level?)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = _module_level(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, [], id(node) in top
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            yield node.lineno, module, [a.name for a in node.names], id(node) in top
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value, [], False


def _edges():
    """{module: {imported tftransfer module: first line}}; a submodule's
    import also runs its packages' `__init__`s (unless it is inside them)."""
    edges = {name: {} for name in MODULES}
    for name, path in MODULES.items():
        for line, module, names, _ in _imports(name, path):
            if not module.startswith("tftransfer"):
                continue
            targets = [module] + [t for t in (_resolve(module, n) for n in names) if t]
            for target in targets:
                parts = target.split(".")
                for i in range(2, len(parts) + 1):
                    ancestor = ".".join(parts[:i])
                    inside = name == ancestor or name.startswith(ancestor + ".")
                    if ancestor in MODULES and ancestor != name and not (
                        inside and ancestor != target
                    ):
                        edges[name].setdefault(ancestor, line)
    return edges


def _layer(name):
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if name == prefix or name.startswith(prefix + "."):
                return index, prefix
    return None


def test_every_module_has_a_layer():
    missing = [name for name in MODULES if name != "tftransfer" and _layer(name) is None]
    assert not missing, f"Modules in no layer of tests/test_structure.py LAYERS: {missing}"


def test_imports_point_down():
    wrong = []
    for name, targets in _edges().items():
        if name == "tftransfer":
            continue
        own_index, own_package = _layer(name)
        for target, line in targets.items():
            if target == "tftransfer":
                continue
            index, package = _layer(target)
            if index < own_index or (index == own_index and package != own_package):
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target} "
                             f"({package} is not below {own_package})")
    assert not wrong, "Imports that point up or sideways:\n" + "\n".join(wrong)


def _cycles(edges):
    """Strongly connected components with more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert not _cycles(_edges())


def test_the_cycle_check_finds_cycles():
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        ["a", "b", "c"]]


def test_imports_at_the_top():
    wrong = []
    for name, path in MODULES.items():
        for line, module, _, at_top in _imports(name, path):
            root = module.split(".")[0]
            if not at_top and root not in LAZY_IMPORTS and not (
                name == "tftransfer" and module.startswith("tftransfer.")
            ) and not module.startswith(LAZY_COMMANDS.get(name, ("\0",))):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} inside a "
                             "function")
    assert not wrong, "\n".join(wrong)


def _private_name_imports(paths):
    wrong = []
    for path in paths:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for line, module, names, _ in _imports(name, path):
            if not module.startswith("tftransfer"):
                continue
            private = [n for n in names if n.startswith("_") and n != "__version__"
                       and _resolve(module, n) is None]
            if private:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {module}")
        tree = ast.parse(path.read_text())
        aliases = {a.asname or a.name for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                       "tftransfer") for a in node.names if _resolve(node.module, a.name)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses "
                             f"{node.value.id}.{node.attr}")
    return wrong


def test_no_private_names_across_modules():
    wrong = _private_name_imports(MODULES.values())
    assert not wrong, "\n".join(wrong)


def test_tests_use_no_private_names():
    tests = sorted(pathlib.Path(__file__).parent.glob("*.py"))
    wrong = _private_name_imports(tests)
    assert not wrong, "\n".join(wrong)


def _defined_private_attributes(tree):
    """Underscored attribute names this module defines itself (on its own
    classes and objects): ``self._x = ...``, ``def _x``, ``x._y = ...``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "property":
            pass
    for node in ast.walk(tree):  # names given to `_shared("...")`-style properties
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
    return names


def test_keras_private_apis_only_in_compat():
    wrong = []
    for name, path in MODULES.items():
        if name == COMPAT:
            continue
        tree = ast.parse(path.read_text())
        own = _defined_private_attributes(tree)
        for line, module, _, _ in _imports(name, path):
            if module.startswith(PRIVATE_MODULES):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                base = node.value
                if node.attr == "__internal__":
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses tf.__internal__")
                elif (node.attr.startswith("_") and not node.attr.startswith("__")
                      and not (isinstance(base, ast.Name) and base.id in ("self", "cls"))
                      and node.attr not in own):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses "
                                 f"{ast.unparse(base)}.{node.attr}")
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                    "getattr", "hasattr", "setattr") and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Constant)
                  and str(node.args[1].value).startswith("_")
                  and not str(node.args[1].value).startswith("__")
                  and node.args[1].value not in own):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} uses "
                             f"{node.func.id}(..., {node.args[1].value!r})")
    assert not wrong, ("Keras/TensorFlow private APIs outside tftransfer/_compat.py:\n"
                       + "\n".join(wrong))


def test_modules_are_small():
    big = {str(p.relative_to(ROOT)): n for p in MODULES.values()
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"Modules over {MAX_LINES} lines: {big}"


@pytest.mark.parametrize("command", [
    "import tftransfer",
    "import tftransfer.cli as cli; cli.main(['--help'])",
    "import tftransfer.cli as cli; cli.main(['--version'])",
])
def test_import_and_help_do_not_import_tensorflow(command):
    script = (
        "import sys\n"
        "try:\n"
        f"    {command}\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=str(ROOT), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout, result.stdout[-2000:]
