"""The request path's structure, read from the imports: serving and training meet only in ``modelfiles``
(what a model version is on disk) and in the offline funnel evaluation's call of the serving funnel.

Every import counts, wherever it is: at the top of a module, inside a function or under
``TYPE_CHECKING``, since each of them ties one package to the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The one way training reaches into serving: the offline funnel evaluation runs the serving funnel.
ALLOWED_TRAINING_TO_SERVING = {("training/funnel_eval.py", "serving.funnel")}


def imported_modules(source: str) -> set[str]:
    """Every module ``source`` imports, by its full name (``from serving import metrics`` is ``serving.metrics``
    as well as ``serving``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # the project imports absolutely; a relative import would hide its target here
                raise AssertionError(f"relative import of {node.module!r}")
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def package_imports(package: str) -> list[tuple[str, str]]:
    """``(file, module)`` for each module imported by each file of ``package``."""
    return [(str(path.relative_to(ROOT)), module)
            for path in sorted((ROOT / package).rglob("*.py"))
            for module in sorted(imported_modules(path.read_text()))]


def of_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def project_packages() -> set[str]:
    return {path.name for path in ROOT.iterdir() if path.is_dir() and not path.name.startswith(".")}


def test_the_import_reader_sees_imports_in_functions_and_under_type_checking():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from training.split import Split\n"
              "def load():\n    import modelfiles.index\n    from serving import metrics\n")
    assert {"training.split", "modelfiles.index", "serving.metrics", "serving"} <= imported_modules(source)


def test_serving_imports_nothing_from_training():
    assert [(file, module) for file, module in package_imports("serving") if of_package(module, "training")] == []


def test_training_imports_from_serving_only_the_funnel_in_the_offline_funnel_evaluation():
    found = {(file, module) for file, module in package_imports("training") if of_package(module, "serving")}
    # ``from serving.funnel import Funnel`` also reads as the module ``serving.funnel.Funnel``.
    outside = {(file, module) for file, module in found
               if not any(file == allowed_file and of_package(module, allowed)
                          for allowed_file, allowed in ALLOWED_TRAINING_TO_SERVING)}
    assert outside == set()
    assert found, "the offline funnel evaluation no longer runs the serving funnel: update this test's allowance"


@pytest.mark.parametrize("other", ["serving", "training"])
def test_the_model_files_import_neither_serving_nor_training(other):
    assert [(file, module) for file, module in package_imports("modelfiles") if of_package(module, other)] == []


def test_the_request_types_import_nothing_of_the_project():
    imported = imported_modules((ROOT / "serving" / "request.py").read_text())
    packages = project_packages()
    assert {"serving", "training", "modelfiles", "featurestore", "funnel_core"} <= packages
    assert sorted(module for module in imported if module.split(".")[0] in packages) == []
