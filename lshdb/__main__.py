"""``python -m lshdb ...``: the ``lshdb`` command line."""

from .cli import main

main()
