"""The index's internal interface (docs/internals.md) and the rules it exists for: no module
reaches into another object's private attributes, and only the metric registry looks at a
metric's name."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import lshdb
from lshdb.errors import LshdbError
from lshdb.metrics import METRIC_NAMES

PACKAGE = Path(lshdb.__file__).parent


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def _own_names(cls: ast.ClassDef) -> set[str]:
    """The methods of a class and the attributes its methods set on ``self``."""
    own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "self" and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
    return own


def test_no_module_touches_another_objects_private_attributes() -> None:
    found = []
    for path, tree in _modules():
        allowed: dict[int, set[str]] = {}  # a class may use its own private names on any instance
        for cls in ast.walk(tree):
            if isinstance(cls, ast.ClassDef):
                own = _own_names(cls)
                for node in ast.walk(cls):
                    allowed.setdefault(id(node), set()).update(own)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) \
                        and owner.func.id == "super":
                    continue
                if node.attr in allowed.get(id(node), ()):
                    continue
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "private attributes of other objects:\n" + "\n".join(found)


def test_only_the_metric_registry_compares_metric_names() -> None:
    names = set(METRIC_NAMES)
    found = []
    for path, tree in _modules():
        if path.relative_to(PACKAGE).as_posix() == "metrics/registry.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for side in [node.left, *node.comparators]:
                values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: "
                                 f"{ast.unparse(node)}")
    assert not found, "switches on metric names:\n" + "\n".join(found)


def test_reader_and_writer_expose_the_interface(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    index = lshdb.create(tmp_path / "v.lshdb", metric="l2", dim=8)
    index.add(range(30), X)
    with index.writer() as w:
        assert w.n_rows == 30 and w.family is None and w.codes is None
        assert w.rows is index.files().rows and w.store is index.files().store
        w.put_meta(b"settings", {**w.settings, "probes": 3})
    with pytest.raises(LshdbError, match="not active"):
        w.txn  # noqa: B018 - the block has ended
    index.close()
    with lshdb.open(tmp_path / "v.lshdb", readonly=True) as again, again.reader() as r:
        assert r.index is again and r.n_rows == 30 and r.codes is None
        assert r.norms is not None  # l2 scans use the rows' squared norms
        np.testing.assert_array_equal(r.rows.read(np.array([4]), r.n_rows)[0], X[4])
        assert r.txn.get(b"settings", db=r.store.db(b"meta")) is not None
        assert r.settings["probes"] == 3
