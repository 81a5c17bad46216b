"""Pieces every command line shares."""
from __future__ import annotations

import argparse
import typing


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and the module docstring kept as written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")
