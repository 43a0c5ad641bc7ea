"""The repository's docs stand alone and state the signatures the code has."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from ppyoloe_sod import boxes

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"


def test_docs_point_at_nothing_outside_the_repository():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "ppyoloe_sod").rglob("*.py"),
             *(ROOT / "configs").glob("*.yaml")]
    offenders = [str(f.relative_to(ROOT)) for f in files if "../shared" in f.read_text(encoding="utf-8")]
    assert offenders == []


@pytest.mark.parametrize("name", ["decode", "postprocess"])
def test_design_states_the_box_functions_signatures(name):
    """`boxes.NAME(a, b [shape] = ..., ...)` in DESIGN.md lists the function's parameters in order."""
    text = " ".join(DESIGN.read_text(encoding="utf-8").split())
    documented = re.search(rf"`boxes\.{name}\(([^`]*?)\) ->", text)
    assert documented, f"DESIGN.md does not document boxes.{name}"
    names = [re.match(r"\s*(\w+)", part).group(1) for part in _top_level_parts(documented.group(1))]
    assert names == list(inspect.signature(getattr(boxes, name)).parameters)


def _top_level_parts(text: str) -> list[str]:
    """``a, b [B, 2] = (sy, sx), c`` -> ['a', 'b [B, 2] = (sy, sx)', 'c']."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]
