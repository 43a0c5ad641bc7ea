"""Settings the export tests share (the near-tie-aware matcher is tests/parity_match.py)."""
from __future__ import annotations

SIZE = (320, 320)  # (h, w) the export tests run at: the inference tests' size, 4x cheaper than 640
