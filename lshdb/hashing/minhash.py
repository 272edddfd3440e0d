"""MinHash signatures of sets, their Jaccard estimates, and LSH banding keys.

Two ways to sign a set, both with ``P[sig_a[j] == sig_b[j]] ~= J(A, B)`` for every column j:

``mode="oph"`` (the default, for speed): one-permutation hashing, densified
    (:mod:`lshdb.hashing.minhash_oph`); signatures are ``uint32``.
``mode="classic"`` (datasketch-compatible): ``num_perm`` affine permutations, bit-identical
    to ``datasketch.MinHash`` (:mod:`lshdb.hashing.minhash_classic`).

Banding (:func:`band_keys`) turns ``b`` bands of ``r`` columns into one 8-byte key per band;
:func:`lshdb.theory.optimal_bands` chooses ``(b, r)`` for a similarity threshold.

Thread safety: all functions are pure; concurrent calls are safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidParameterError, InvalidVectorError
from .bands import band_keys
from .minhash_classic import (
    SCHEMES,
    check_scheme,
    classic_permutations,
    classic_signatures,
    classic_signatures_csr,
)
from .minhash_oph import oph_signatures
from .shingles import parse_shingle, shingle_hashes, shingle_token_hashes

__all__ = [
    "MODES",
    "SCHEMES",
    "oph_signatures",
    "classic_signatures",
    "classic_signatures_csr",
    "classic_permutations",
    "text_signatures",
    "estimate_jaccard",
    "band_keys",
]

MODES = ("oph", "classic")


def text_signatures(texts: Sequence[str], shingle: str = "word:5", num_perm: int = 128,
                    mode: str = "oph", seed: int = 0, scheme: str = "affine32") -> np.ndarray:
    """Signatures of raw texts: shingle (:mod:`lshdb.hashing.shingles`), then sign.

    ``mode="oph"`` signs the 64-bit shingle hashes; ``mode="classic"`` signs the SHA-1
    token hashes of the shingle strings, so that row i equals datasketch's MinHash of
    ``[s.encode("utf-8") for s in word_shingles(texts[i], n)]`` (or ``char_shingles``).

    Raises
    ------
    InvalidVectorError
        A text with no shingles (no words); its number is named.
    InvalidParameterError
        An unknown mode, shingle spec or scheme.
    """
    kind, n = parse_shingle(shingle)
    if mode == "oph":
        offsets, hashes = shingle_hashes(texts, kind, n, distinct=False)
        return oph_signatures(offsets, hashes, num_perm, seed)
    if mode == "classic":
        width = 64 if check_scheme(scheme) == "affine64" else 32
        offsets, tokens = shingle_token_hashes(texts, kind, n, width=width)
        return classic_signatures_csr(offsets, tokens, num_perm, seed, scheme)
    raise InvalidParameterError(f"mode must be 'oph' or 'classic'; found {mode!r}")


# -- estimates and bands ---------------------------------------------------------------


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float | np.ndarray:
    """Estimated Jaccard similarity: the fraction of equal signature columns.

    Two 1-d signatures give a float; a 2-d ``(n, k)`` matrix against a 1-d signature or
    against another ``(n, k)`` matrix gives ``(n,)`` row-wise estimates.

    Raises
    ------
    InvalidVectorError
        Signatures of different lengths or incompatible shapes.
    """
    a, b = np.asarray(sig_a), np.asarray(sig_b)
    if a.ndim == 1 and b.ndim == 2:
        a, b = b, a
    if a.shape[-1:] != b.shape[-1:] or a.ndim > 2 or b.ndim > 2 or (
            a.ndim == b.ndim == 2 and a.shape != b.shape):
        raise InvalidVectorError(f"signature shapes {a.shape} and {b.shape} do not match")
    if a.shape[-1] == 0:
        raise InvalidVectorError("signatures must have at least one column")
    eq = (a == b).mean(axis=-1)
    return float(eq) if eq.ndim == 0 else eq
