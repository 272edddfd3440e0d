"""``python -m lshdb ...``: the ``lshdb`` command line."""

from .cli.main import main

main()
