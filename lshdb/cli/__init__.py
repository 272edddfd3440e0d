"""The ``lshdb`` command line: click commands, thin over the library."""

from .main import main

__all__ = ["main"]
