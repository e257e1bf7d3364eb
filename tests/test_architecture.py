"""The architecture stays as docs/architecture.md describes it.

- Layering: models ← training, models ← service, xiaobao over all three; no product package imports
  bench or tests. Checked on the source with `ast` (function-local imports included), so it costs
  no import of torch or FastAPI.
- The document cannot rot: every repository path it names in backticks exists, every module it names
  (`service.intake`) is a module, every `module:qualified.name` is defined there, every
  `tests/….py::test_name` is a test in that file, and every module directly under models/, training/
  and service/ is named in it.

Names are resolved from the source rather than by importing: importing the service, torch and the
encoder code takes about ten seconds, and the source is what a reader opens anyway. A name counts as
defined when the module (or the class, for `Class.member`) defines, assigns or imports it; an import
is followed to where the name is defined.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("models", "training", "service", "xiaobao", "bench")

# package → the top-level packages it must never import
FORBIDDEN = {
    "models": {"training", "service", "xiaobao", "bench", "tests"},
    "training": {"service", "xiaobao", "bench", "tests"},
    "service": {"training", "xiaobao", "bench", "tests"},
    "xiaobao": {"bench", "tests"},
}

# Paths the document may name that are build output, not in the repository.
BUILD_OUTPUT = ("var/", "models/registry", "models/encoder_e5", "test-artifacts/")

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE = re.compile(r"`([^`\n]+)`")
_PKG = "|".join(PACKAGES)
_CODE_REF = re.compile(rf"^((?:{_PKG})(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_MODULE_REF = re.compile(rf"^(?:{_PKG})(?:\.[A-Za-z_]\w*)+$")
_PATH = re.compile(r"^[\w.\-/*]+$")


# --- the source --------------------------------------------------------------------------------------
def module_path(module: str) -> Path | None:
    """The file defining `module` (a package's __init__.py), or None."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in `tree`, wherever it stands, and every
    importlib.import_module / __import__ of a constant string; `package` anchors relative imports."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.lineno, absolute(node, package)))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a `from … import` reads, relative imports resolved against `package`."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    return ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))


def package_of(path: Path) -> str:
    module = module_of(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _members(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """What a module or class body binds at its top level (branches of if/try included)."""
    out: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        out[name.id] = node
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try)):
            for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                out.update(_members(block))
    return out


def resolve(module: str, qualname: str, depth: int = 0) -> str | None:
    """None if `module` defines `qualname`, else what is missing."""
    path = module_path(module)
    if path is None:
        return f"no module {module}"
    head, _, rest = qualname.partition(".")
    node = _members(parsed(path).body).get(head)
    if node is None:
        sub = f"{module}.{head}"  # a submodule of a package
        if module_path(sub) is not None:
            return resolve(sub, rest, depth + 1) if rest else None
        return f"{module} defines no {head}"
    if isinstance(node, ast.ImportFrom) and depth < 10:
        source = absolute(node, package_of(path))
        original = next(a.name for a in node.names if (a.asname or a.name) == head)
        if source.split(".")[0] not in PACKAGES:
            return None if not rest else f"{module}.{head} comes from {source}, outside the repository"
        if module_path(f"{source}.{original}") is not None:  # `from pkg import submodule`
            return resolve(f"{source}.{original}", rest, depth + 1) if rest else None
        return resolve(source, ".".join([original, rest]) if rest else original, depth + 1)
    for member in rest.split(".") if rest else []:
        if not isinstance(node, ast.ClassDef):
            return f"{module}:{qualname}: {head} is not a class, so {member} cannot be checked"
        found = _members(node.body).get(member)
        if found is None:
            return f"{module}:{qualname}: class {node.name} defines no {member}"
        node, head = found, member
    return None


def package_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts)


# --- the document -----------------------------------------------------------------------------------
@functools.cache
def doc_tokens() -> tuple[str, ...]:
    text = DOC.read_text(encoding="utf-8")
    prose = _FENCE.sub("", text)
    return tuple(t.strip() for t in _INLINE.findall(prose))


def doc_paths() -> list[str]:
    out = []
    for token in doc_tokens():
        token = token.split("::")[0]
        if " " in token or "://" in token or token.startswith("/") or not _PATH.match(token):
            continue
        if "/" in token or token.endswith(".py"):
            out.append(token)
    return out


def doc_test_refs() -> list[tuple[str, str]]:
    """(file, test) for every `tests/….py::test_name` the document names."""
    return [(t.split("::")[0], t.split("::")[1]) for t in doc_tokens()
            if t.startswith("tests/") and t.count("::") == 1 and " " not in t]


def doc_code_refs() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for t in doc_tokens() if (m := _CODE_REF.match(t))]


def doc_module_refs() -> list[str]:
    return [t for t in doc_tokens() if _MODULE_REF.match(t)]


# --- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package):
    """training → models ← service; xiaobao fronts them; no product code imports bench or tests."""
    broken = []
    for path in package_files(package):
        for line, module in imported_modules(parsed(path), package_of(path)):
            top = module.split(".")[0]
            if top in FORBIDDEN[package]:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not broken, (f"{package}/ must not import {', '.join(sorted(FORBIDDEN[package]))} "
                        "(docs/architecture.md, section 1):\n" + "\n".join(broken))


def test_http_errors_stay_in_the_api_and_the_console():
    """Domain code raises service.errors (NotFound, Conflict, Invalid); only service/api/ and
    service/web/ speak HTTP, so only they may name `ApiError`."""
    allowed = (ROOT / "service" / "api", ROOT / "service" / "web")
    named = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in package_files("service")
             if not any(path.is_relative_to(folder) for folder in allowed)
             for node in ast.walk(parsed(path))
             if (isinstance(node, ast.Name) and node.id == "ApiError")
             or (isinstance(node, ast.alias) and node.name == "ApiError")]
    assert not named, "ApiError outside service/api/ and service/web/: " + ", ".join(named)


def test_the_layering_check_sees_every_kind_of_import():
    """The checker itself: plain, from, relative, function-local and import_module imports."""
    tree = ast.parse("import training.fit\nfrom xiaobao import cli\nfrom . import db\nfrom .api import deps\n"
                     "def f():\n    from bench import common\n    import importlib\n"
                     "    importlib.import_module('tests.conftest')\n")
    found = {m for _, m in imported_modules(tree, "service")}
    assert found == {"training.fit", "xiaobao", "service", "service.api", "bench", "importlib", "tests.conftest"}


def test_the_document_names_only_paths_that_exist():
    paths = doc_paths()
    assert len(paths) > 30, "the document should name the files it talks about"
    missing = []
    for p in paths:
        if p.startswith(BUILD_OUTPUT):
            continue
        exists = any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists()
        if not exists:
            missing.append(p)
    assert not missing, "docs/architecture.md names paths that do not exist: " + ", ".join(missing)


def test_the_documents_code_references_resolve():
    refs = doc_code_refs()
    assert len(refs) > 50, "write functions and classes as `package.module:name` so they are checked"
    problems = [f"`{m}:{q}`: {why}" for m, q in refs if (why := resolve(m, q))]
    assert not problems, "docs/architecture.md refers to names that are not there:\n" + "\n".join(problems)


def test_the_documents_test_references_resolve():
    missing = [f"{f}::{name}" for f, name in doc_test_refs()
               if not (ROOT / f).is_file() or name not in _members(parsed(ROOT / f).body)]
    assert not missing, "docs/architecture.md names tests that do not exist: " + ", ".join(missing)


def test_the_documents_module_references_are_modules():
    bad = [m for m in doc_module_refs() if module_path(m) is None]
    assert not bad, ("docs/architecture.md names dotted modules that do not exist (write a function or "
                     "class as `package.module:name`): " + ", ".join(bad))


def test_every_module_is_placed_in_the_document():
    """A module added under models/, training/ or service/ needs a line in docs/architecture.md."""
    named_paths = {p.rstrip("/") for p in doc_paths()}
    named_modules = set(doc_module_refs()) | {m for m, _ in doc_code_refs()}
    absent = []
    for package in ("models", "training", "service"):
        for entry in sorted((ROOT / package).iterdir()):
            is_module = entry.suffix == ".py" and entry.name != "__init__.py"
            is_folder = entry.is_dir() and any(entry.rglob("*.py"))
            if not (is_module or is_folder):
                continue
            rel = entry.relative_to(ROOT).as_posix()
            dotted = rel.removesuffix(".py").replace("/", ".")
            if rel in named_paths or any(m == dotted or m.startswith(dotted + ".") for m in named_modules) \
                    or any(p.startswith(rel + "/") for p in named_paths):
                continue
            absent.append(rel)
    assert not absent, "docs/architecture.md does not say where these live: " + ", ".join(absent)


def test_the_resolver_refuses_what_is_not_there():
    assert resolve("service.intake", "Intake.submit") is None
    assert resolve("service.letters", "Letters.issue") is None
    assert resolve("models.bundle", "HybridTextClassifier") is None  # re-exported from models.heads
    assert resolve("service.intake", "no_such_hook")
    assert resolve("service.letters", "Letters.no_such_method")
    assert resolve("service.no_such_module", "x")
