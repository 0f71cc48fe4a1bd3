"""The import structure of the library, read from the source (nothing is imported).

Rules: first-party modules import each other without a cycle (function-local imports
count); the library (tf_simclr, hub_export) never imports upward: tf_simclr's modules
do not import hub_export, only the entry points do; absl flags and app live only in
the entry points; `tf.saved_model` only in the exporter and the module loader; no
module reads another first-party module's `_private` name.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tf_simclr", "hub_export")
ENTRY_POINTS = {"tf_simclr.run", "tf_simclr.preview_augment", "tf_simclr.probe.__main__",
                "tf_simclr.import_official.__main__", "hub_export.__main__"}
# The exporter writes SavedModels; feature_module loads any image feature-vector module;
# the importer runs an official SavedModel beside what it imported from it; a
# distillation teacher may be a SavedModel.
SAVED_MODEL_USERS = {"hub_export.exporter", "hub_export.feature_module",
                     "tf_simclr.import_official.importer", "tf_simclr.train.teacher"}


def _modules():
    """{dotted module name: path} of every first-party library module."""
    modules = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()
TREES = {name: ast.parse(open(path, encoding="utf-8").read()) for name, path in MODULES.items()}


def _resolve(name):
    """The first-party module a dotted import name refers to, or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node):
    """Dotted names an import statement binds: `from a import b` -> a.b; else []."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def _imports(module):
    """[(imported first-party module, line)] of every import in `module`, local ones too.

    `from package import name` imports package.name when that is a module, else the
    package itself (`_resolve` walks up to the first known module)."""
    return [(target, node.lineno) for node in ast.walk(TREES[module])
            for target in map(_resolve, _imported_names(node)) if target and target != module]


def _module_aliases(module):
    """{local name: first-party module} bound by `module`'s imports."""
    aliases = {}
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    aliases[alias.asname] = alias.name
    return aliases


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def test_no_import_cycles():
    graph = {module: sorted({target for target, _ in _imports(module)}) for module in MODULES}
    cycles = []
    state = {}  # module -> "open" while on the stack, "done" after

    def visit(module, stack):
        state[module] = "open"
        for target in graph[module]:
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_tf_simclr_library_never_imports_hub_export():
    offenders = [f"{module}:{line} imports {target}"
                 for module in MODULES if module.startswith("tf_simclr")
                 and module not in ENTRY_POINTS
                 for target, line in _imports(module) if target.startswith("hub_export")]
    assert not offenders


@pytest.mark.parametrize("rule", ["absl flags and app", "tf.saved_model"])
def test_entry_point_and_exporter_only_apis(rule):
    offenders = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if rule == "absl flags and app" and module not in ENTRY_POINTS:
                bad = any(name.split(".")[:2] in (["absl", "flags"], ["absl", "app"])
                          for name in _imported_names(node))
            elif rule == "tf.saved_model" and module not in SAVED_MODEL_USERS:
                bad = (isinstance(node, ast.Attribute) and node.attr == "saved_model"
                       and isinstance(node.value, ast.Name) and node.value.id == "tf")
            else:
                bad = False
            if bad:
                offenders.append(f"{module}:{node.lineno}")
    assert not offenders, f"{rule} outside its modules: {offenders}"


def test_no_module_reads_another_modules_private_names():
    offenders = []
    for module, tree in TREES.items():
        aliases = _module_aliases(module)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _is_private(node.attr)
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                offenders.append(f"{module}:{node.lineno} reads "
                                 f"{aliases[node.value.id]}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and _resolve(node.module or ""):
                offenders += [f"{module}:{node.lineno} imports {node.module}.{alias.name}"
                              for alias in node.names if _is_private(alias.name)]
    assert not offenders, "\n".join(offenders)
