"""One JSON writer for the objects that describe a run (config, labels, reports)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def dump_json(data: dict[str, Any], path: str | Path | None = None) -> str:
    """Indented JSON text of ``data`` (numpy scalars as floats); also written to ``path`` when given."""
    text = json.dumps(data, indent=2, default=float)
    if path is not None:
        Path(path).write_text(text)
    return text
