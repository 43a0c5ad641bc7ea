"""The demo page in a real headless browser (Playwright driving Debian's Chromium) against a live server:
upload a generated image, wait for the answer, and check the boxes the page shows against ``predict``.

Needs ``pip install playwright`` (in the dev extra) and a Chromium binary: ``apt-get install -y chromium``
(scripts/test.sh installs both; Playwright's own browser download is not used). ``PPYOLOE_SOD_CHROMIUM`` names
another binary.
"""
from __future__ import annotations

import base64
import os
import shutil

import cv2
import pytest

from ppyoloe_sod.serve.app import create_app

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")
CHROMIUM = os.environ.get("PPYOLOE_SOD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium to drive: apt-get install -y chromium (scripts/test.sh installs it) or set "
                "PPYOLOE_SOD_CHROMIUM", allow_module_level=True)

DROP_FILE = """([data, name]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type: "image/png" }));
  document.body.dataset.state = "";
  document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true,
                                                                         cancelable: true }));
}"""


def shown_rows(page) -> list[list[str]]:
    return page.eval_on_selector_all("#boxes tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def expected_rows(result) -> list[list[str]]:
    """The table the page should show for predict's boxes."""
    return [[str(i + 1), b["label"], f"{b['score']:.3f}", *(f"{v:.1f}" for v in b["coordinate"])]
            for i, b in enumerate(result.boxes)]


def test_the_demo_page_shows_the_detections_of_an_uploaded_and_a_dropped_image(live, net_predictor, street,
                                                                                tmp_path) -> None:
    image_path = tmp_path / "street.png"
    cv2.imwrite(str(image_path), street)
    server = live(create_app(net_predictor))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            failed_requests = []
            page.on("requestfailed", lambda request: failed_requests.append(request.url))
            page.goto(server.url + "/")
            assert page.input_value("#threshold") == "0.5"  # the server's threshold

            page.set_input_files("#file", str(image_path))  # choosing a file runs the detection
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            expected = expected_rows(next(net_predictor.predict(street, threshold=0.5)))
            assert len(expected) > 0
            assert shown_rows(page) == expected
            assert page.text_content("#status") == f"{len(expected)} objects found"
            size = page.eval_on_selector("#drawing", "img => [img.naturalWidth, img.naturalHeight]")
            assert size == [street.shape[1], street.shape[0]]  # the drawing, at the image's size
            assert '"errorMsg": "Success"' in page.text_content("#json")

            page.fill("#threshold", "0.6")  # then a dropped file at another threshold
            page.evaluate(DROP_FILE, [base64.b64encode(image_path.read_bytes()).decode(), "street.png"])
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            expected = expected_rows(next(net_predictor.predict(street, threshold=0.6)))
            assert len(expected) > 0 and shown_rows(page) == expected
            assert failed_requests == []
        finally:
            browser.close()


def test_the_demo_page_shows_a_refusal(live, net_predictor, tmp_path) -> None:
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image\n")
    server = live(create_app(net_predictor))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.set_input_files("#file", str(text_file))
            page.wait_for_selector("body[data-state=error]", timeout=60_000)
            assert "Cannot decode 'image' as an image" in page.text_content("#status")
        finally:
            browser.close()
