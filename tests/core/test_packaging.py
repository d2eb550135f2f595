"""Packaging: pyproject.toml states compatible ranges, constraints.txt pins the tested versions.

- every base dependency is used at run time: imported by a package that `pip install` installs, or
  used through a named library for a stated reason (INDIRECT); test-only packages sit in extras;
- every third-party module the installed packages import comes from a base dependency (or a named
  dependency of one, or is an optional, guarded import: OPTIONAL);
- no exact pins in pyproject's base dependencies; every requirement has a lower and an upper bound;
- every requirement is pinned in constraints.txt, inside its range, and `make install` uses the file;
- no extra installs a second distribution of a module the base already provides (onnxruntime-gpu).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("zoo", "serving", "export", "training", "demos", "bench")  # what pip install installs

# Base dependencies that no module of ours imports by name, and why they are still needed at run time:
# (the library that uses them, a file of ours that relies on that use, a string that file contains).
INDIRECT = {
    "onnxscript": ("torch.onnx.export(dynamo=True) builds ONNX graphs with it", "export/onnx.py", "dynamo=True"),
    "python-multipart": ("FastAPI parses multipart/form-data bodies with it", "serving/rest.py", "multipart/form-data"),
    "httptools": ("uvicorn's HTTP parser when installed (http=\"auto\")", "serving/app.py", "httptools"),
    "uvloop": ("uvicorn's event loop when installed (loop=\"auto\")", "serving/app.py", "uvloop"),
    "torch-fidelity": ("torchmetrics' NoTrainInceptionV3 (the FID Inception) is its network", "zoo/metrics/generation.py", "NoTrainInceptionV3"),
}
# Modules we import that come with a base dependency (its own dependency, the API we use through it).
TRANSITIVE = {"starlette": "fastapi"}
# Installed by `make install` with --no-deps (Makefile NO_DEPS): their metadata pins what would replace
# ours. Each requirement they declare must be a base dependency, or be named here with what stands in.
NO_DEPS = {"rapidocr-onnxruntime": "AnyText's Sen.ACC / NED and DocDiff's OCR bench (PP-OCRv4 ONNX models in the wheel)",
           "facenet-pytorch": "InterLCM's MTCNN face detector (weights in the wheel)"}
STANDS_IN = {"opencv-python": "opencv-python-headless"}  # the same cv2 module, without the GUI libraries
# Imports guarded at run time, never required (a clear error names what is missing).
OPTIONAL = {"tensorrt": "export/tensorrt.py", "anomalib": "bench/reference.py"}


@cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def base_requirements() -> list[Requirement]:
    return [Requirement(r) for r in pyproject()["project"]["dependencies"]]


def all_requirements() -> dict[str, list[Requirement]]:
    out = {"base": base_requirements()}
    for extra, reqs in pyproject()["project"].get("optional-dependencies", {}).items():
        out[extra] = [Requirement(r) for r in reqs]
    return out


def constraints() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt:{number}: {line!r} is not an exact pin name==version"
        name = canonicalize_name(match[1])
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = Version(match[2])
    return pins


@cache
def runtime_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> files (relative) that import it, lazy imports included."""
    found: dict[str, set[str]] = {}
    for package in RUNTIME_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in RUNTIME_PACKAGES and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def installed_modules() -> dict[str, list[str]]:
    return md.packages_distributions()


def distributions_of(module: str) -> set[str]:
    return {canonicalize_name(d) for d in installed_modules().get(module, [])}


def test_runtime_import_scan_sees_known_imports() -> None:
    """The scan itself works: it finds lazy imports inside functions, not only module-level ones."""
    found = runtime_imports()
    assert "export/triton.py" in found["tritonclient"]  # imported inside a function
    assert "zoo/cli.py" in found["typer"]
    assert "zoo" not in found and "json" not in found


def test_no_deps_packages_are_installed_pinned_and_their_needs_met() -> None:
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^NO_DEPS := (.+)$", makefile, re.M)
    assert listed and set(listed.group(1).split()) == set(NO_DEPS), "Makefile NO_DEPS and this test's NO_DEPS must agree"
    assert re.search(r"pip install .*-c constraints\.txt --no-deps \$\(NO_DEPS\)", makefile), "make install must add NO_DEPS with --no-deps"
    pins = constraints()
    base = {canonicalize_name(r.name) for r in base_requirements()}
    for name in NO_DEPS:
        assert name in pins, f"{name} is not pinned in constraints.txt (make lock)"
        for requirement in md.requires(name) or []:
            req = Requirement(requirement)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            needed = canonicalize_name(req.name)
            assert needed in base or STANDS_IN.get(needed) in base, f"{name} needs {req}, which is not a base dependency"


def test_no_exact_pins_in_base_dependencies() -> None:
    for req in base_requirements():
        assert not any(spec.operator in ("==", "===") for spec in req.specifier), (
            f"pyproject.toml pins {req} exactly: state a compatible range, the exact version goes to constraints.txt"
        )


@pytest.mark.parametrize("group", sorted(all_requirements()))
def test_every_requirement_is_a_bounded_range(group: str) -> None:
    for req in all_requirements()[group]:
        operators = {spec.operator for spec in req.specifier}
        assert ">=" in operators and "<" in operators, f"{group}: {req} needs a lower (>=) and an upper (<) bound"


def test_every_base_dependency_is_used_at_run_time() -> None:
    imported: set[str] = set()
    for module in runtime_imports():
        imported |= distributions_of(module)
    for name, (reason, path, evidence) in INDIRECT.items():
        assert evidence in (ROOT / path).read_text(), f"{name} is kept because {reason}, but {path} no longer shows {evidence!r}"
    needed_by_no_deps = {canonicalize_name(Requirement(r).name) for name in NO_DEPS for r in md.requires(name) or []}
    unused = [str(req) for req in base_requirements() if canonicalize_name(req.name) not in imported | set(INDIRECT) | needed_by_no_deps]
    assert not unused, f"base dependencies imported nowhere in {RUNTIME_PACKAGES}: {unused} (move them to an extra, or drop them)"
    stale = set(INDIRECT) - {canonicalize_name(r.name) for r in base_requirements()}
    assert not stale, f"INDIRECT names {stale}, which are no longer base dependencies"


def test_every_runtime_import_is_a_base_dependency() -> None:
    base = {canonicalize_name(r.name) for r in base_requirements()}
    for module, parent in TRANSITIVE.items():
        requires = {canonicalize_name(Requirement(r).name) for r in md.requires(parent) or []}
        assert distributions_of(module) <= requires, f"{module} is said to come with {parent}, which does not require it"
    missing = {}
    for module, files in runtime_imports().items():
        if module in TRANSITIVE or module in OPTIONAL:
            continue
        dists = distributions_of(module)
        if not dists & (base | set(NO_DEPS)):
            missing[module] = (sorted(dists) or "not installed", sorted(files)[:3])
    assert not missing, f"imported at run time but not a base dependency: {missing}"
    for module, path in OPTIONAL.items():
        assert path in runtime_imports().get(module, set()), f"OPTIONAL names {module} in {path}, which no longer imports it"


def test_constraints_pin_every_requirement_inside_its_range() -> None:
    pins = constraints()
    for group, reqs in all_requirements().items():
        for req in reqs:
            name = canonicalize_name(req.name)
            assert name in pins, f"{group}: {req} is not pinned in constraints.txt (make lock)"
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"{group}: constraints.txt pins {name}=={pins[name]}, outside pyproject's {req}"
            )


def test_make_install_uses_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    install = [line for line in makefile.splitlines() if "pip install" in line and "-e " in line]
    assert install and all("-c constraints.txt" in line for line in install), install
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", makefile, re.M), "the install stamp must depend on constraints.txt"


def test_no_extra_installs_a_second_copy_of_a_base_module() -> None:
    """onnxruntime-gpu and onnxruntime both install the `onnxruntime` module: never both."""
    base = {canonicalize_name(r.name) for r in base_requirements()}
    clashes = {"onnxruntime-gpu": "onnxruntime", "opencv-python-headless": "opencv-python"}
    for group, reqs in all_requirements().items():
        for req in reqs:
            other = clashes.get(canonicalize_name(req.name))
            assert other not in base, f"extra {group} installs {req.name}, which clashes with the base {other}"


def test_ci_lints_and_type_checks_before_the_tests() -> None:
    """ruff and mypy run in CI (make lint, before make test), with a real rule set: per-module mypy
    entries only switch off named error codes, never a whole module of the type-checked layers."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make lint" in ci and ci.index("make lint") < ci.index("make test")
    lint = re.search(r"^lint:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert lint and "ruff check ." in lint[1] and "mypy" in lint[1]
    tool = pyproject()["tool"]
    assert {"E", "F", "W", "I", "B", "UP"} <= set(tool["ruff"]["lint"]["select"])
    assert tool["mypy"]["files"] == ["zoo"]  # zoo.serving, zoo.export, zoo.training inside it (symlinked layers)
    unchecked = ("zoo.bench.", "zoo.demos.")  # measurement scripts and the Gradio UI: followed through imports only
    for override in tool["mypy"].get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        checked = [m for m in modules if m.startswith("zoo.") and not m.startswith(unchecked)]
        assert not (checked and override.get("ignore_errors")), f"mypy ignores every error in {checked}"
        assert set(override) <= {"module", "disable_error_code", "ignore_errors"}, override


def test_layers_install_inside_the_zoo_namespace() -> None:
    """serving/ export/ training/ demos/ bench/ sit at the top of the repository but install as
    zoo.serving, ...: setuptools finds only zoo* (through the zoo/<name> symlinks), so nothing
    named `export` or `bench` lands in site-packages; and nothing imports the bare names."""
    from setuptools import find_packages

    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["zoo*"]
    found = set(find_packages(where=str(ROOT), include=include))
    layers = ("serving", "export", "training", "demos", "bench")
    assert {f"zoo.{name}" for name in layers} <= found and all(p == "zoo" or p.startswith("zoo.") for p in found)
    for name in layers:
        assert (ROOT / "zoo" / name).resolve() == (ROOT / name).resolve(), f"zoo/{name} must link to the top-level {name}/"
    bare = re.compile(r"^\s*(?:from|import) (?:serving|export|training|demos|bench)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("zoo", "tests", *layers) for p in (ROOT / folder).rglob("*.py")
                 if "__pycache__" not in p.parts and bare.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"import the layers as zoo.<name>: {sorted(set(offenders))[:5]}"
