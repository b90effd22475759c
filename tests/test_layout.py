"""The house rules, read from the source: dvc.yaml deps, layers, thin stages, short functions.

Import closure rule (what a stage's `dvc.yaml` deps must list): every in-repo
module the stage's `python -m stages.<name>` can import, found from the AST:
imports at module level and inside functions, each package's `__init__.py` on
the way, and `stages/__init__.py`. A name taken from a package whose
`__init__.py` maps it lazily (`_EXPORTS` in `gradguard/__init__.py`) counts its
module, since taking the name imports it; the lazy table's other entries do
not, as they run only when someone takes their name.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"gradguard": ROOT / "src" / "gradguard", "stages": ROOT / "stages"}

# Layers, lowest first: a module imports from its own layer or lower ones only.
LAYERS = [
    ("errors", "settings", "io", "kind_keys", "params", "verdict", "native_log"),
    ("functional",),
    ("guard", "loss_scale", "_tf_distribute"),
    ("data",),
    ("training",),
    ("evaluation",),
    ("experiments",),
]
NO_FRAMEWORK = (
    "gradguard.errors",
    "gradguard.settings",
    "gradguard.io",
    "gradguard.params",
    "gradguard.verdict",
    "gradguard.native_log",
)
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
MAX_FUNCTION_LINES = 60  # lines of code: no blank lines, comments or docstrings
MAX_STAGE_LINES = 80


def module_path(name: str) -> Path | None:
    """The file of an in-repo module (`gradguard.data.stream`), or None."""
    top, *rest = name.split(".")
    if top not in SOURCES:
        return None
    base = SOURCES[top].joinpath(*rest)
    if base.is_dir() and (base / "__init__.py").is_file():
        return base / "__init__.py"
    file = base.with_suffix(".py")
    return file if file.is_file() else None


def module_name(path: Path) -> str:
    for top, folder in SOURCES.items():
        if path.is_relative_to(folder):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


@cache
def lazy_exports(package: str) -> dict[str, str]:
    """The `_EXPORTS` table of a package's `__init__.py` (name -> module), if it has one."""
    path = module_path(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in targets):
            return ast.literal_eval(node.value)
    return {}


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def direct_imports(path: Path) -> frozenset[str]:
    """The in-repo modules one file imports (anywhere in it), parents included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(with_parents(node.module))
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if module_path(submodule) is not None:
                    found.add(submodule)
                elif alias.name in lazy_exports(node.module):
                    found.update(with_parents(lazy_exports(node.module)[alias.name]))
    return frozenset(name for name in found if module_path(name) is not None)


def closure(module: str) -> set[Path]:
    """Every in-repo file `python -m module` can import."""
    todo, seen = with_parents(module), set()
    while todo:
        name = todo.pop()
        path = module_path(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(direct_imports(path))
    return seen


def stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    command = shlex.split(stage["cmd"])
    return command[command.index("-m") + 1]


@pytest.mark.parametrize("name", sorted(stages()))
def test_each_stage_lists_exactly_the_python_files_it_imports(name):
    stage = stages()[name]
    listed = {dep for dep in stage["deps"] if dep.endswith(".py")}
    imported = {str(p.relative_to(ROOT)) for p in closure(stage_module(stage))}
    assert sorted(imported - listed) == [], "imported but not in dvc.yaml's deps"
    assert sorted(listed - imported) == [], "in dvc.yaml's deps but never imported"


@pytest.mark.parametrize("name", ["check_params", "prepare", "augment"])
def test_the_data_stages_never_import_the_training_code(name):
    imported = {module_name(p) for p in closure(stage_module(stages()[name]))}
    training = sorted(
        m for m in imported if m.startswith(("gradguard.training", "gradguard.guard"))
    )
    assert training == []


def library_modules() -> list[Path]:
    return sorted(SOURCES["gradguard"].rglob("*.py"))


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None  # the package itself: its lazy table names every layer
    return next(i for i, layer in enumerate(LAYERS) if parts[1] in layer)


# The package's own __init__.py stands above every layer (its lazy table names them all):
# `test_the_lazy_table_names_only_what_its_modules_define` checks it instead.
LAYERED = [p for p in library_modules() if p != SOURCES["gradguard"] / "__init__.py"]


@pytest.mark.parametrize("path", LAYERED, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path):
    name = module_name(path)
    own = layer_of(name)
    assert own is not None, f"{name} is in no layer of LAYERS"
    upward = sorted(
        f"{imported} (layer {layer_of(imported)} > {own})"
        for imported in direct_imports(path)
        if layer_of(imported) is not None and layer_of(imported) > own
    )
    assert upward == []


def framework_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return [n for n in names if n.split(".")[0] in FRAMEWORKS]


@pytest.mark.parametrize("name", NO_FRAMEWORK)
def test_the_bottom_layer_imports_no_framework(name):
    assert framework_imports(module_path(name)) == []


def test_data_sources_and_the_pure_step_keep_to_their_side():
    # The data sources load no framework at import (mnist's download imports Keras when asked).
    tree = ast.parse(module_path("gradguard.data.sources").read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not [n for n in top_level if ast.unparse(n).split()[1].split(".")[0] in FRAMEWORKS]
    # The pure step reads the guard's settings, never the pipeline's params schema.
    assert "gradguard.params" not in direct_imports(module_path("gradguard.functional.step"))


def test_the_experiments_package_loads_no_framework_no_dvc_and_no_training_code():
    # `import gradguard.experiments...` must work without Keras, TensorFlow or DVC: each is
    # imported, where needed at all, inside the function that calls it.
    folder = SOURCES["gradguard"] / "experiments"
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
        heavy = [n for n in names if n.split(".")[0] in (*FRAMEWORKS, "dvc", "dvclive")]
        assert heavy == [], path.name
        assert not [n for n in direct_imports(path) if n.startswith("gradguard.training")]


def test_the_gradguard_command_starts_without_keras_or_dvc():
    probe = (
        "import sys, gradguard.experiments.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'jax', "
        "'dvc', 'dvclive'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def code_lines(node: ast.AST, source_lines: list[str]) -> int:
    """Lines of a function that hold code: no blank lines, comments or docstring."""
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
        skip = set(range(first.lineno, first.end_lineno + 1))
    else:
        skip = set()
    lines = range(node.lineno, node.end_lineno + 1)
    return sum(
        1
        for n in lines
        if n not in skip
        and source_lines[n - 1].strip()
        and not source_lines[n - 1].strip().startswith("#")
    )


def python_files() -> list[Path]:
    return [*library_modules(), *sorted(SOURCES["stages"].glob("*.py"))]


def longer_than(kinds, limit) -> list[str]:
    """`file:line name (count)` of each definition of `kinds` over `limit(name)` code lines."""
    long = []
    for path in python_files():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, kinds) and (count := code_lines(node, lines)) > limit(node.name):
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({count})")
    return long


def test_no_function_is_longer_than_sixty_lines_of_code():
    functions = ast.FunctionDef | ast.AsyncFunctionDef
    assert longer_than(functions, lambda _: MAX_FUNCTION_LINES) == []


MAX_CLASS_LINES = 250  # lines of code of a class, as for functions
# Classes kept above it, each with its reason.
LARGE_CLASSES = {
    # A Keras optimizer: build, the stateful and the stateless apply of every backend,
    # get_config/from_config and the statistics are one object by Keras's API; the step
    # itself already lives apart (functional/step.py).
    "GradientGuard": 300,
}


def test_no_class_is_longer_than_its_limit():
    assert longer_than(ast.ClassDef, lambda name: LARGE_CLASSES.get(name, MAX_CLASS_LINES)) == []


@pytest.mark.parametrize("path", sorted(SOURCES["stages"].glob("*.py")), ids=lambda p: p.name)
def test_every_module_in_stages_is_thin(path):
    # The stages dvc.yaml names and the thin command lines beside them (compare, gate, launch).
    assert len(path.read_text().splitlines()) <= MAX_STAGE_LINES


def test_nothing_outside_stages_and_tests_imports_the_stages():
    outside = [
        *library_modules(),
        *sorted((ROOT / "benchmarks").glob("*.py")),
    ]
    offenders = [
        str(p.relative_to(ROOT))
        for p in outside
        if any(m.startswith("stages") for m in direct_imports(p))
    ]
    assert offenders == []


def test_the_lazy_table_names_only_what_its_modules_define():
    for name, module in lazy_exports("gradguard").items():
        tree = ast.parse(module_path(module).read_text())
        defined = {getattr(node, "name", None) for node in tree.body} | {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        assert name in defined, f"{name} is not defined in {module}"


def _resolves(name: str) -> bool:
    """Whether `gradguard.a.b.c` names a module, or an attribute reached from one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_dotted_gradguard_name_in_code_and_docs_resolves():
    # A module moved into a subpackage leaves its old dotted name behind in comments,
    # docstrings, errors and docs; each such name must still import (or be reached).
    texts = [
        *library_modules(),
        *sorted(SOURCES["stages"].glob("*.py")),
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "README.md",
    ]
    pattern = re.compile(r"\bgradguard(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
    stale = sorted(
        f"{path.relative_to(ROOT)}:{number} {name}"
        for path in texts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name in {m.rstrip(".") for m in pattern.findall(line)}
        if not _resolves(name)
    )
    assert stale == []


# Facts with one home each: a pattern that matches only the defining line -> that module.
ONE_HOME = {
    r"^VERDICTS\s*=": "verdict.py",  # a run's verdicts
    r"^EXPLOSION_POLICIES\s*=": "settings.py",
    r"^STEP_LOG_COLUMNS\s*=": "functional/state.py",
    r"^EVENT_CODES\s*=": "settings.py",
    r"^CLIP_MODES\s*=": "settings.py",
    r"not valid YAML \(": "io.py",  # the YAML error's wording
    r"\"state\.json\"": "training/resume.py",  # the resume state's one reader and writer
    r"\"metrics/eval\.json\"": "experiments/plan.py",  # our pipeline's files, for compare
    r"\"metrics/train/metrics\.json\"": "experiments/plan.py",
    r"partition\(\"-s\"\)|partition\(\"-lr\"\)|-s\{": "experiments/plan.py",  # run names
}


@pytest.mark.parametrize("pattern", sorted(ONE_HOME))
def test_each_fact_is_written_in_one_module(pattern):
    regex = re.compile(pattern, re.MULTILINE)
    homes = sorted(
        str(path.relative_to(SOURCES["gradguard"]))
        for path in library_modules()
        if regex.search(path.read_text())
    )
    assert homes == [ONE_HOME[pattern]]


def test_fit_reads_no_files():
    # The resume snapshot is loaded by training/resume.py alone; fit gets it typed.
    source = (SOURCES["gradguard"] / "training" / "fit.py").read_text()
    for reader in ("read_text", "open(", "np.load", "load_model(", "json.load"):
        assert reader not in source, reader


# A module's tests are in tests/test_<module>.py; these names differ (two modules share a
# name, or the module is private).
TEST_FILE_OF = {
    "evaluation/report.py": "test_evaluation_report.py",
    "experiments/report.py": "test_compare_report.py",
    "experiments/gate.py": "test_seeded_gate.py",
    "_tf_distribute.py": "test_tf_distribute.py",
}


def test_every_library_module_has_a_test_file_named_after_it():
    missing = []
    for path in library_modules():
        if path.name == "__init__.py":
            continue
        module = path.relative_to(SOURCES["gradguard"]).as_posix()
        name = TEST_FILE_OF.get(module, f"test_{path.stem}.py")
        if not (ROOT / "tests" / name).is_file():
            missing.append(f"{module}: tests/{name}")
    assert missing == []
    assert all((ROOT / "tests" / name).is_file() for name in TEST_FILE_OF.values())
