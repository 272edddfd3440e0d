"""What the command line prints: library messages in its words, floats without noise."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["cli_words", "tidy"]

# the library's hints name its Python arguments and calls; at the command line the flags
# and commands say it
_CLI_WORDS = (("pass missing_ok=True", "pass --missing-ok"), ("use upsert()", "use --upsert"),
              ("raise timeout=", "raise --timeout"), ("(n_queries=)", "(--queries)"),
              ("a lower target_recall", "a lower --target-recall"),
              ("lshdb.create()", "lshdb create"),
              ("text_field and tokens_field", "--text-field and --tokens-field"),
              ("or open() it", "or add to it with lshdb add"),
              ("open it with readonly=True to query it",
               "read-only commands (query, get, stats) still work"))
_FLAGS = {"L": "--tables", "k": "--bits", "w": "--width", "num_perm": "--num-perm",
          "max_value": "--max-value", "target_recall": "--target-recall",
          "min_hits": "--min-hits", "probes": "--probes", "rerank": "--rerank",
          "candidates": "--candidates", "store_tokens": "--store-tokens", "codes": "--codes",
          "threshold": "--threshold", "shingle": "--shingle", "mode": "--mode",
          "seed": "--seed", "durability": "--durability", "family": "--family",
          "scan": "--scan", "timeout": "--timeout"}
_NAMES = "|".join(sorted(map(re.escape, _FLAGS), key=len, reverse=True))
# an option named as the subject of a message ("k must be ...", "w is the ...")
_SUBJECT = re.compile(rf"(^|; |\()({_NAMES})(?= must| is | applies| \(| do )")
# an option with a value ("min_hits=4", "family='unary'", "store_tokens=True")
_ASSIGN = re.compile(rf"(?<![\w.-])({_NAMES})=('?)([\w.]+)\2")
_UNKNOWN = re.compile(r"unknown options? ((?:'\w+'(?:, )?)+); valid options are .*$")


def cli_words(message: str) -> str:
    """``message`` with the library's Python names replaced by the command line's."""
    for api, flag in _CLI_WORDS:
        message = message.replace(api, flag)
    message = _UNKNOWN.sub(lambda m: "{} {} not apply to this metric".format(
        ", ".join(_FLAGS.get(n, "--" + n.replace("_", "-"))
                  for n in re.findall(r"'(\w+)'", m.group(1))),
        "does" if m.group(1).count("'") == 2 else "do"), message)
    message = _SUBJECT.sub(lambda m: m.group(1) + _FLAGS[m.group(2)], message)
    return _ASSIGN.sub(lambda m: _FLAGS[m.group(1)] + (
        "" if m.group(3) == "True" else " " + m.group(3)), message)


def tidy(v: Any) -> Any:
    """``v`` with each float rounded to the digits it holds: 7 significant digits for a
    float32 value (distances; 0.7 rather than 0.70000005 or 0.699999988079071), 12 for any
    other (0.3 rather than 0.30000000000000004)."""
    if isinstance(v, (float, np.floating)) and not isinstance(v, bool):
        f = float(v)
        if not np.isfinite(f):
            return f
        if isinstance(v, np.float32) or float(np.float32(f)) == f:
            return float(f"{f:.7g}")
        return float(f"{f:.12g}")
    if isinstance(v, dict):
        return {k: tidy(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [tidy(x) for x in v]
    return v
