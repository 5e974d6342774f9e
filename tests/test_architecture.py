"""The layering of docs/architecture.md, held by walking every module's imports with ``ast``.

Every ``import`` / ``from ... import`` under ``src/mcgenref`` counts, wherever it stands (module
top, inside a function, under ``if TYPE_CHECKING:``); relative imports are resolved against the
importing module's package, and ``importlib.import_module("mcgenref....")`` with a literal name
counts too. A forbidden import fails the test with ``file:line: rule``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "mcgenref"

#: Modules and packages at the ground: they import nothing above them (only each other and
#: the root package, for ``__version__``).
GROUND = frozenset({"config", "errors", "progress", "runtime", "clusters", "detections", "spots"})

#: (importing part, parts it must not import, why) for the stages.
STAGE_RULES: tuple[tuple[frozenset[str], frozenset[str], str], ...] = (
    (frozenset({"io", "datasets"}),
     frozenset({"synthesis", "models", "flow", "training", "inference", "evaluation"}),
     "io and datasets (reading data) import no stage above them"),
    (frozenset({"synthesis"}), frozenset({"models", "flow", "training", "inference", "evaluation"}),
     "synthesis imports none of models, flow, training, inference, evaluation"),
    (frozenset({"models", "flow"}), frozenset({"training", "inference", "evaluation"}),
     "the generative core (models, flow) imports none of training, inference, evaluation"),
    (frozenset({"inference"}), frozenset({"training", "evaluation"}),
     "inference imports neither training nor evaluation"),
    (frozenset({"evaluation"}), frozenset({"training"}), "evaluation does not import training"),
    (frozenset({"training"}), frozenset({"inference", "evaluation"}),
     "training imports neither inference nor evaluation"),
)


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.imported}: {self.rule}"


def module_name(path: Path, src: Path = SRC) -> str:
    """``src/mcgenref/io/readers.py`` -> ``mcgenref.io.readers`` (a package: its ``__init__``'s
    name is the package's)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (see the module docstring).

    ``from a import b`` yields ``a.b`` (``b`` may be a module; if it is a name in ``a``, its
    part of the layering is still ``a``'s).
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(p for p in [*base_parts, node.module or ""] if p)
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


#: The package's top-level modules and sub-packages (``from mcgenref import __version__``
#: names none of them: it is the root package).
PARTS = frozenset(p.stem for p in (SRC / PACKAGE).iterdir()
                  if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file())


def _part(module: str) -> str | None:
    """The top-level module or sub-package a name is in (``mcgenref.io.readers`` -> ``io``);
    ``""`` for the root package itself (and names defined in it); ``None`` outside it."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 and parts[1] in PARTS else ""


def check_source(source: str, module: str, path: str, is_package: bool = False) -> list[Violation]:
    """The forbidden imports of one module's ``source`` (``module``: its dotted name)."""
    here = _part(module)
    violations: list[Violation] = []
    seen: set[tuple[int, str]] = set()
    for line, imported in imported_modules(source, module, is_package):
        there = _part(imported)
        if there is None or there == here or (line, there) in seen:
            continue
        rule = None
        if there in ("cli", "workflows") and here not in ("cli", "workflows"):
            rule = "the library never imports cli or workflows"
        elif there == "report" and here != "workflows":
            rule = "nothing but workflows imports report"
        elif here in GROUND and there not in GROUND and there != "":
            rule = f"ground modules ({', '.join(sorted(GROUND))}) import nothing above them"
        else:
            for importers, forbidden, why in STAGE_RULES:
                if here in importers and there in forbidden:
                    rule = why
                    break
        if rule is not None:
            seen.add((line, there))
            violations.append(Violation(path, line, imported, rule))
    return violations


def check_tree(root: Path = SRC / PACKAGE) -> list[Violation]:
    violations = []
    for path in sorted(root.rglob("*.py")):
        violations += check_source(path.read_text(encoding="utf-8"), module_name(path, root.parent),
                                   str(path.relative_to(root.parent.parent)), path.name == "__init__.py")
    return violations


def test_every_module_keeps_the_layering() -> None:
    violations = check_tree()
    assert not violations, "forbidden imports:\n" + "\n".join(map(str, violations))


def test_the_walk_sees_every_module() -> None:
    """The tree walked is the package (a wrong root would pass vacuously)."""
    names = {module_name(p) for p in (SRC / PACKAGE).rglob("*.py")}
    assert {"mcgenref.runtime", "mcgenref.inference.segment", "mcgenref.io", "mcgenref.cli"} <= names
    assert {"io", "datasets", "training", "report", "workflows", "cli", *GROUND} <= PARTS


# --------------------------------------------------------------------------- the test of the test


@pytest.mark.parametrize("module,source,rule", [
    # a top-level import
    ("mcgenref.inference.segment", "from mcgenref.training.loop import resolve_device\n",
     "inference imports neither training nor evaluation"),
    # inside a function, as a plain import
    ("mcgenref.inference.segment", "def f():\n    import mcgenref.evaluation.metrics\n",
     "inference imports neither training nor evaluation"),
    # relative, two levels up
    ("mcgenref.training.generator", "def f():\n    from ..evaluation import realism\n",
     "training imports neither inference nor evaluation"),
    # relative, into a sibling package
    ("mcgenref.io.readers", "from ..synthesis.render import render_sample\n", "io and datasets"),
    ("mcgenref.models.generator", "from mcgenref.flow import rectified\nfrom mcgenref.inference import refine\n",
     "generative core"),
    ("mcgenref.evaluation.evaluate", "from mcgenref import training\n", "evaluation does not import training"),
    ("mcgenref.training.loop", "import importlib\nm = importlib.import_module('mcgenref.inference.segment')\n",
     "training imports neither inference nor evaluation"),
    ("mcgenref.inference.batch", "from mcgenref.report import html\n", "nothing but workflows imports report"),
    ("mcgenref.cli", "from mcgenref.report.html import write_segment_report\n",
     "nothing but workflows imports report"),
    ("mcgenref.evaluation.metrics", "from mcgenref.workflows import run_segment\n",
     "the library never imports cli or workflows"),
    ("mcgenref.spots", "from mcgenref.io.spacing import validate_spacing\n", "ground modules"),
    ("mcgenref.runtime", "if TYPE_CHECKING:\n    from mcgenref.models import checkpoint\n", "ground modules"),
    ("mcgenref.synthesis.dataset", "from mcgenref.models.segmentor import build_segmentor\n", "synthesis imports"),
])
def test_a_forbidden_import_is_caught(module: str, source: str, rule: str) -> None:
    found = check_source(source, module, "src/x.py")
    assert len(found) == 1, found
    assert rule in found[0].rule
    assert str(found[0]).startswith(f"src/x.py:{found[0].line}: imports mcgenref.")
    assert found[0].line == len(source.splitlines())  # each forbidden import is the last line


def test_the_message_names_file_line_and_rule() -> None:
    source = "import numpy\n\n\ndef f():\n    from mcgenref.evaluation.clusters import ClusterRule\n"
    (found,) = check_source(source, "mcgenref.inference.postprocess", "src/mcgenref/inference/postprocess.py")
    assert str(found) == ("src/mcgenref/inference/postprocess.py:5: imports mcgenref.evaluation.clusters: "
                          "inference imports neither training nor evaluation")


def test_a_relative_import_in_a_package_init_resolves_to_the_package() -> None:
    # in mcgenref/inference/__init__.py, "from .segment import x" is mcgenref.inference.segment
    # (allowed) and "from ..training import loop" is mcgenref.training (forbidden)
    assert imported_modules("from .segment import Segmenter\n", "mcgenref.inference", is_package=True)[0] \
        == (1, "mcgenref.inference.segment")
    (found,) = check_source("from ..training import loop\n", "mcgenref.inference", "x", is_package=True)
    assert found.imported.startswith("mcgenref.training")


@pytest.mark.parametrize("module,source", [
    ("mcgenref.inference.segment", "from mcgenref.clusters import ClusterRule\nfrom mcgenref.runtime import Autocast\n"),
    ("mcgenref.inference.refine", "from mcgenref.models.generator import guided_velocity\nfrom mcgenref.flow import seeds\n"),
    ("mcgenref.evaluation.synthetic", "from mcgenref.inference.refine import Refiner\n"),
    ("mcgenref.training.generator", "def f():\n    from mcgenref.spots import find_spot_candidates\n"),
    ("mcgenref.workflows", "from mcgenref.report import write_segment_report\nfrom mcgenref.training import loop\n"),
    ("mcgenref.cli", "from mcgenref.workflows import run_segment\n"),
    ("mcgenref.clusters", "from mcgenref.errors import InputError\nimport mcgenref\nimport numpy\n"),
    ("mcgenref.spots", "from mcgenref import __version__\nfrom . import errors\n"),
    ("mcgenref.io.readers", "from .meta import ImageMeta\nfrom mcgenref.datasets import data_root\n"),
])
def test_an_allowed_import_passes(module: str, source: str) -> None:
    assert check_source(source, module, "src/x.py") == []


def test_a_forbidden_module_on_disk_is_caught(tmp_path: Path) -> None:
    """The whole walk (files -> names -> rules) on a synthetic package tree."""
    pkg = tmp_path / "src" / PACKAGE
    for sub in ("inference", "training"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "training" / "loop.py").write_text("def resolve_device():\n    pass\n")
    (pkg / "inference" / "ok.py").write_text("from mcgenref.inference import other\n")
    (pkg / "inference" / "bad.py").write_text('"""doc"""\n\n\ndef f():\n    from ..training.loop import resolve_device\n')
    found = check_tree(pkg)
    assert [str(v) for v in found] == [
        "src/mcgenref/inference/bad.py:5: imports mcgenref.training.loop: "
        "inference imports neither training nor evaluation"
    ]
