"""Pictures of an index for `lshdb stats`: its S-curve and its bucket sizes, as text bars
in the terminal or as a PNG (with matplotlib, the optional ``plot`` extra)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from ..hashing.theory import family_curve
from ..storage.streams import open_output

__all__ = ["s_curve", "bars", "plot"]


def s_curve(stats: dict[str, Any], points: int = 11) -> dict[str, Any] | None:
    """The S-curve of the index described by ``stats`` (``Index.stats()``), or None."""
    fam = stats.get("family")
    if not fam:
        return None
    dim = stats["dim"] if "dim" in stats else stats["num_perm"]  # (jaccard: num_perm)
    axis, x, p, s = family_curve(fam, int(dim), points)
    return {"axis": axis, "x": x.tolist(), "p_function": p.tolist(), "p_candidate": s.tolist()}


def bars(labels: list[str], values: list[float], width: int = 40,
         fmt: str = "{:.3f}") -> list[str]:
    """Horizontal text bars, one line per label, scaled to the largest value."""
    top = max(values) if values and max(values) > 0 else 1.0
    pad = max((len(lab) for lab in labels), default=0)
    return [f"{lab.rjust(pad)} | {'#' * int(round(width * v / top)):<{width}} {fmt.format(v)}"
            for lab, v in zip(labels, values)]


def plot(path: str, curve: dict[str, Any] | None, histogram: list[dict[str, Any]]) -> None:
    """Write the S-curve and the bucket-size histogram to a PNG file (``-``: standard
    output; a regular file is written atomically)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InvalidParameterError(
            "--plot needs matplotlib: pip install 'lshdb[plot]'") from exc
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if curve:
        x = np.asarray(curve["x"])
        axes[0].plot(x, curve["p_function"], label="one function")
        axes[0].plot(x, curve["p_candidate"], label="candidate (home buckets)")
        axes[0].set_xlabel(curve["axis"])
        axes[0].set_ylabel("probability")
        axes[0].set_title("S-curve")
        axes[0].legend()
    if histogram:
        axes[1].bar([h["ids"] for h in histogram], [h["buckets"] for h in histogram])
        axes[1].set_xlabel("ids per bucket")
        axes[1].set_ylabel("buckets (all tables)")
        axes[1].set_title("bucket sizes")
        axes[1].tick_params(axis="x", rotation=45)
    fig.tight_layout()
    with open_output(path, binary=True) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
