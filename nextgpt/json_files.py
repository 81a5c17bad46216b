"""Reading the project's JSON inputs (datasets, manifests, annotations, predictions): every problem with the file
is a `DataError` naming it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import DataError


def read_json(path: str | os.PathLike, what: str = "data file") -> Any:
    """The parsed content of `path`; `what` names the kind of file in the not-found message."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None


def read_json_list(path: str | os.PathLike, what: str = "data file") -> list[Any]:
    """A JSON file whose top level is a list (of samples, records, items)."""
    data = read_json(path, what)
    if not isinstance(data, list):
        raise DataError(f"{path}: the top level must be a list of samples, got {type(data).__name__}")
    return data
