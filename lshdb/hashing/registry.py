"""The hash families by stored name, registered here explicitly and complete on import."""

from __future__ import annotations

from typing import Any

from ..errors import CorruptIndexError
from .bands import MinHashBands
from .crosspolytope import CrossPolytope
from .families import BitSample, Family, Hyperplane, PStable, Unary

__all__ = ["FAMILIES", "family_from_params"]

FAMILIES: dict[str, Any] = {  # name -> a Family subclass with from_params
    "hyperplane": Hyperplane,
    "pstable": PStable,
    "bitsample": BitSample,
    "unary": Unary,
    "crosspolytope": CrossPolytope,
    "minhash": MinHashBands,
}


def family_from_params(dim: int, p: dict[str, Any]) -> Family:
    """Rebuild a stored family, turning a malformed record into :class:`CorruptIndexError`."""
    cls = FAMILIES.get(p.get("family", ""))
    if cls is None:
        raise CorruptIndexError(f"unknown stored hash family {p.get('family')!r}")
    try:
        fam: Family = cls.from_params(dim, p)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptIndexError(f"stored {p.get('family')} parameters are malformed: {exc}") from exc
    return fam
