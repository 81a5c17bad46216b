"""Pieces every command line shares."""
from __future__ import annotations

import argparse
import os
import sys
import typing


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and the module docstring kept as written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def exit_launched(code: int) -> typing.NoReturn:
    """Leave a script the training launcher may start on several processes (train.py, the preprocessing scripts).
    DeepSpeed's comm layer with gloo can abort at interpreter exit in multi-process runs (DeepSpeed 0.19), so there
    a rank leaves without running the exit handlers once its work is done."""
    sys.stdout.flush()
    sys.stderr.flush()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os._exit(code)
    sys.exit(code)
