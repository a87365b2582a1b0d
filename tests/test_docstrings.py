"""Every public definition in ``src/mridomain`` has a docstring (issue 22).

Public means a module-level function or class, or a method of a public class, whose name does not start
with ``_``, including ones defined under a module- or class-level ``if`` / ``try`` / ``with``; functions
nested inside functions are implementation detail and are skipped.
"""
from __future__ import annotations

import ast
from pathlib import Path

import mridomain

PACKAGE = Path(mridomain.__file__).resolve().parent
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
BLOCKS = (ast.If, ast.Try, ast.With)


def missing_docstrings(tree: ast.Module, filename: str) -> list[str]:
    """``file:line qualified.name`` for each public definition in ``tree`` that has no docstring."""
    missing: list[str] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, BLOCKS):
                for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", []),
                              *(handler.body for handler in getattr(node, "handlers", []))):
                    visit(block, prefix)
                continue
            if not isinstance(node, DEFINITIONS) or node.name.startswith("_"):
                continue
            if ast.get_docstring(node) is None:
                missing.append(f"{filename}:{node.lineno} {prefix}{node.name}")
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return missing


def test_the_check_catches_a_missing_docstring():
    source = (
        "def public(): pass\n"
        "def _private(): pass\n"
        "class Documented:\n"
        "    '''Has one.'''\n"
        "    def method(self): pass\n"
        "    def _hidden(self): pass\n"
        "def outer():\n"
        "    '''Has one.'''\n"
        "    def inner(): pass\n"
        "class _Private:\n"
        "    def method(self): pass\n"
        "try:\n"
        "    import fast\n"
        "except ImportError:\n"
        "    def fallback(): pass\n"
    )
    assert missing_docstrings(ast.parse(source), "m.py") == ["m.py:1 public", "m.py:5 Documented.method",
                                                              "m.py:15 fallback"]


def test_every_public_definition_has_a_docstring():
    missing: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        missing += missing_docstrings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), relative)
    assert not missing, f"{len(missing)} public definitions without a docstring:\n" + "\n".join(missing)
