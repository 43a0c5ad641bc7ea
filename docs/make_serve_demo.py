"""Screenshot the serving demo page for the README: a live server, Chromium driven by Playwright, one upload.

The network is SOD-S with random weights made to fire on small shapes (the tests' ``randomize_detector``): the
official weights cannot be fetched from the machines this project is built on, and VisDrone images may not be
redistributed. So the picture shows the page (upload, threshold, drawing, table, JSON), not the model's accuracy;
the threshold is set to keep about a dozen boxes. Needs the serve extra, Playwright and a Chromium
(``apt-get install -y chromium``). Run:

    python docs/make_serve_demo.py          # writes docs/images/serve_demo.png (about a minute on 2 cores)
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "serve")]

from playwright.sync_api import sync_playwright  # noqa: E402
from serve_synth import LiveServer  # noqa: E402

from ppyoloe_sod.fileio import atomic_write_bytes  # noqa: E402
from ppyoloe_sod.infer.backends import TorchBackend  # noqa: E402
from ppyoloe_sod.infer.predictor import DetPredictor  # noqa: E402
from ppyoloe_sod.models import build_model  # noqa: E402
from ppyoloe_sod.serve.app import create_app  # noqa: E402
from tests.infer.infer_synth import MODEL, randomize_detector, scene  # noqa: E402

OUT = ROOT / "docs" / "images" / "serve_demo.png"
BOXES = 12  # about how many boxes the screenshot shows


def threshold_keeping(scores: np.ndarray, n: int) -> float:
    """A threshold halfway between the n-th and the (n+1)-th highest score."""
    top = np.sort(scores)[::-1]
    return float((top[n - 1] + top[n]) / 2) if len(top) > n else 0.5


def main() -> None:
    detector = randomize_detector(build_model(MODEL))
    spec = detector.spec
    predictor = DetPredictor(detector, TorchBackend(detector, "cpu"), spec.name, spec.classes, (320, 320))
    image = scene(300, 400, seed=3)
    threshold = threshold_keeping(predictor.detect_batch([image])[0][:, 1], BOXES)
    chromium = os.environ.get("PPYOLOE_SOD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    server = LiveServer(create_app(predictor)).start()
    try:
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            path = Path(tmp) / "street.png"
            cv2.imwrite(str(path), image)
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page.goto(server.url + "/")
            page.fill("#threshold", f"{threshold:.4f}")
            page.set_input_files("#file", str(path))
            page.wait_for_selector("body[data-state=done]", timeout=300_000)
            atomic_write_bytes(OUT, page.screenshot())
            browser.close()
    finally:
        server.stop()
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
