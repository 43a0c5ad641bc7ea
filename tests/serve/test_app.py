"""The service over real HTTP: a live uvicorn on 127.0.0.1 driven by PaddleX's client code (``requests``).

The network's answers are compared with ``predict`` on the same image; the fakes (no network) cover the
refusals, the limits, concurrency and shutdown quickly.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import cv2
import pytest
import requests

from ppyoloe_sod.config import ServeConfig
from ppyoloe_sod.serve.app import create_app

from local_http import LocalServer
from serve_synth import fake_predictor, png_base64, size_box

TEXT_FILE = b"name,score\ncar,0.9\n"


def _endpoint(server) -> str:
    return server.url + "/small-object-detection"


def _expected_objects(result) -> list[dict]:
    """predict's boxes in the service's field names."""
    return [{"bbox": b["coordinate"], "categoryId": b["cls_id"], "categoryName": b["label"], "score": b["score"]}
            for b in result.boxes]


def _assert_same_objects(got: list[dict], expected: list[dict]) -> None:
    assert [(o["categoryId"], o["categoryName"]) for o in got] == [(o["categoryId"], o["categoryName"])
                                                                  for o in expected]
    for g, e in zip(got, expected):
        assert g["bbox"] == pytest.approx(e["bbox"], abs=1e-4) and g["score"] == pytest.approx(e["score"], abs=1e-6)


def _errors(answer: dict) -> list[dict]:
    """PaddleX's 422 errorMsg: a JSON list of {type, loc, msg}."""
    return json.loads(answer["errorMsg"])


def test_health_answers_like_paddlex(live, echo_predictor) -> None:
    server = live(create_app(echo_predictor))
    answer = requests.get(server.url + "/health", timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"logId", "errorCode", "errorMsg"}
    assert body["errorCode"] == 0 and body["errorMsg"] == "Healthy" and uuid.UUID(body["logId"])


def test_the_paddlex_client_snippet_gets_the_detections_of_predict(live, net_predictor, street, tmp_path) -> None:
    image_path = tmp_path / "demo.png"
    cv2.imwrite(str(image_path), street)
    server = live(create_app(net_predictor))
    # PaddleX's documented client for this pipeline, as users run it:
    API_URL = _endpoint(server)
    with open(image_path, "rb") as file:
        image_bytes = file.read()
        image_data = base64.b64encode(image_bytes).decode("ascii")
    payload = {"image": image_data}
    response = requests.post(API_URL, json=payload, timeout=120)
    assert response.status_code == 200
    result = response.json()["result"]
    output_image_path = tmp_path / "out.jpg"
    with open(output_image_path, "wb") as file:
        file.write(base64.b64decode(result["image"]))

    body = response.json()
    assert set(body) == {"logId", "errorCode", "errorMsg", "result"} and uuid.UUID(body["logId"])
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success"
    expected = _expected_objects(next(net_predictor.predict(str(image_path))))
    assert len(expected) > 0
    _assert_same_objects(result["detectedObjects"], expected)
    assert output_image_path.read_bytes()[:2] == b"\xff\xd8"  # a JPEG, as PaddleX sends
    drawing = cv2.imread(str(output_image_path))
    assert drawing.shape == street.shape


def test_threshold_float_and_per_class_and_visualize_off(live, net_predictor, street) -> None:
    server = live(create_app(net_predictor))
    for threshold in (0.6, {0: 0.3, 3: 0.9}):
        sent = {str(k): v for k, v in threshold.items()} if isinstance(threshold, dict) else threshold  # JSON keys
        answer = requests.post(_endpoint(server), json={"image": png_base64(street), "threshold": sent,
                                                        "visualize": False}, timeout=120)
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert "image" not in result  # left out, not null, as PaddleX does
        expected = _expected_objects(next(net_predictor.predict(street, threshold=threshold)))
        assert len(expected) > 0
        _assert_same_objects(result["detectedObjects"], expected)


def test_visualize_unset_follows_the_server_setting(live, echo_predictor, street) -> None:
    image = png_base64(street)
    with_drawing = live(create_app(echo_predictor))
    without = live(create_app(echo_predictor, ServeConfig(visualize=False)))
    assert "image" in requests.post(_endpoint(with_drawing), json={"image": image}, timeout=30).json()["result"]
    assert "image" not in requests.post(_endpoint(without), json={"image": image}, timeout=30).json()["result"]


def test_a_sent_log_id_is_echoed(live, echo_predictor, street) -> None:
    server = live(create_app(echo_predictor))
    ok = requests.post(_endpoint(server), json={"image": png_base64(street), "logId": "abc-1"}, timeout=30)
    refused = requests.post(_endpoint(server), json={"image": "%%%", "logId": "abc-2"}, timeout=30)
    assert ok.json()["logId"] == "abc-1" and refused.json()["logId"] == "abc-2"


def test_base64_with_line_breaks_or_a_data_url_prefix_is_read(live, echo_predictor, street) -> None:
    """base64.encodebytes breaks lines every 76 characters; a browser's FileReader adds a data: prefix."""
    server = live(create_app(echo_predictor))
    plain = png_base64(street)
    for image in (base64.encodebytes(base64.b64decode(plain)).decode("ascii"), "data:image/png;base64," + plain):
        answer = requests.post(_endpoint(server), json={"image": image, "visualize": False}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["detectedObjects"][0]["bbox"] == [0.0, 0.0, 160.0, 240.0]


def _huge_png_header() -> str:
    """A PNG whose header declares 20000x20000 pixels (400 M, over PaddleX's 178,956,970): a few bytes."""
    ihdr = (20000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    data = b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + b"IHDR" + ihdr + bytes(4)
    return base64.b64encode(data).decode("ascii")


GOOD = "GOOD"  # stands for a valid base64 image in the cases below

BAD_BODIES = {
    "missing image": ({}, 422, "body.image", "Field required"),
    "image not a string": ({"image": 123}, 422, "body.image", "valid string"),
    "bad base64": ({"image": "this is not base64!"}, 422, "body.image", "neither an http(s) URL nor valid base64"),
    "empty image": ({"image": ""}, 422, "body.image", "is empty"),
    "a text file": ({"image": base64.b64encode(TEXT_FILE).decode()}, 422, "body.image", "Cannot decode"),
    "huge image": ({"image": _huge_png_header()}, 413, None, "over the limit of 178,956,970 pixels"),
    "threshold above 1": ({"image": GOOD, "threshold": 1.5}, 422, "body.threshold", "between 0 and 1"),
    "threshold not a number": ({"image": GOOD, "threshold": "high"}, 422, "body.threshold", "valid number"),
    "threshold unknown class": ({"image": GOOD, "threshold": {"9": 0.5}}, 422, "body.threshold",
                                "classes are 0..3"),
    "visualize not a bool": ({"image": GOOD, "visualize": "maybe"}, 422, "body.visualize", "valid boolean"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_bodies_are_a_clear_4xx_and_the_server_goes_on(live, echo_predictor, street, case) -> None:
    body, status, loc, fragment = BAD_BODIES[case]
    if body.get("image") == GOOD:
        body = {**body, "image": png_base64(street)}
    server = live(create_app(echo_predictor))
    answer = requests.post(_endpoint(server), json=body, timeout=30)
    assert answer.status_code == status, answer.text
    reply = answer.json()
    assert set(reply) == {"logId", "errorCode", "errorMsg"} and reply["errorCode"] == status
    if status == 422:  # PaddleX's form: a JSON list of {type, loc, msg}
        errors = _errors(reply)
        assert any(e["loc"].startswith(loc) and fragment in e["msg"] for e in errors), errors
    else:
        assert fragment in reply["errorMsg"]
    assert requests.get(server.url + "/health", timeout=30).status_code == 200


def test_a_body_that_is_not_json_is_paddlex_s_422(live, echo_predictor) -> None:
    server = live(create_app(echo_predictor))
    answer = requests.post(_endpoint(server), data=b'{"image": ', headers={"Content-Type": "application/json"},
                           timeout=30)
    assert answer.status_code == 422 and _errors(answer.json())[0]["type"] == "json_invalid"


def test_bodies_over_the_limit_are_413_whether_announced_or_chunked(live, echo_predictor, street) -> None:
    server = live(create_app(echo_predictor, ServeConfig(max_body_mb=0.01)))  # 10,485 bytes
    big = json.dumps({"image": "A" * 20_000}).encode()
    announced = requests.post(_endpoint(server), data=big, headers={"Content-Type": "application/json"},
                              timeout=30)
    chunked = requests.post(_endpoint(server), data=iter([big[:8000], big[8000:]]),
                            headers={"Content-Type": "application/json"}, timeout=30)
    for answer in (announced, chunked):
        assert answer.status_code == 413, answer.text
        assert "larger than 10,485 bytes (Serve.max_body_mb" in answer.json()["errorMsg"]
    small = png_base64(cv2.resize(street, (40, 30)))
    assert requests.post(_endpoint(server), json={"image": small}, timeout=30).status_code == 200


def test_the_pixel_limit_is_predict_s(live, street) -> None:
    server = live(create_app(fake_predictor(size_box, max_pixels=1000)))
    answer = requests.post(_endpoint(server), json={"image": png_base64(street)}, timeout=30)
    assert answer.status_code == 413 and "320x240 = 76,800 pixels, over the limit of 1,000" in answer.json()["errorMsg"]


def test_image_urls_are_fetched_within_the_deadline(live, echo_predictor, street) -> None:
    ok, png = cv2.imencode(".png", street)
    files = LocalServer({"/street.png": png.tobytes(), "/slow.png": png.tobytes()[:50]})
    files.trickle["/slow.png"] = 0.2  # 50 bytes, one every 0.2 s: 10 s in all
    files.start()
    try:
        server = live(create_app(echo_predictor, ServeConfig(url_timeout_s=1.0)))
        fetched = requests.post(_endpoint(server), json={"image": files.url("/street.png")}, timeout=30)
        missing = requests.post(_endpoint(server), json={"image": files.url("/none.png")}, timeout=30)
        slow = requests.post(_endpoint(server), json={"image": files.url("/slow.png")}, timeout=30)
    finally:
        files.close()
    assert fetched.status_code == 200
    assert fetched.json()["result"]["detectedObjects"][0]["bbox"] == [0.0, 0.0, 160.0, 240.0]  # street's box
    assert missing.status_code == 400 and "404" in missing.json()["errorMsg"]
    assert slow.status_code == 400 and "longer than 1 s (Serve.url_timeout_s)" in slow.json()["errorMsg"]


def test_a_failing_model_is_paddlex_s_500_and_the_server_goes_on(live, street) -> None:
    def broken(images):
        raise RuntimeError("CUDA error: device-side assert")

    server = live(create_app(fake_predictor(broken)))
    answer = requests.post(_endpoint(server), json={"image": png_base64(street)}, timeout=30)
    assert answer.status_code == 500
    assert answer.json()["errorCode"] == 500 and answer.json()["errorMsg"] == "Internal server error"
    assert requests.get(server.url + "/health", timeout=30).status_code == 200


def test_concurrent_clients_each_get_their_own_answer(live, echo_predictor, street) -> None:
    """40 requests from 8 clients at once, images of 40 different widths: no errors, and every answer is the
    one of its own image (batches are split back correctly)."""
    app = create_app(echo_predictor, ServeConfig(max_batch_size=8, max_wait_ms=20))
    server = live(app)
    images = {w: png_base64(cv2.resize(street, (w, 24))) for w in range(40, 80)}

    def client(width: int) -> tuple[int, int, list]:
        answer = requests.post(_endpoint(server), json={"image": images[width], "visualize": False}, timeout=60)
        return width, answer.status_code, answer.json()["result"]["detectedObjects"][0]["bbox"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, images))
    assert [status for _, status, _ in results] == [200] * 40
    assert all(bbox == [0.0, 0.0, width / 2, 24.0] for width, _, bbox in results)
    assert app.state.service.batcher.stats.images == 40


def test_shutdown_answers_the_request_in_flight(live, street) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(images):
        started.set()
        assert release.wait(60)
        return size_box(images)

    server = live(create_app(fake_predictor(slow)))
    port = int(server.url.rsplit(":", 1)[1])
    answers = []
    client = threading.Thread(target=lambda: answers.append(
        requests.post(_endpoint(server), json={"image": png_base64(street)}, timeout=60)))
    client.start()
    assert started.wait(60)
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    while _accepts(port):  # the server stops listening first ...
        stopping.join(0.05)
    release.set()  # ... and then lets the forward finish
    client.join(60)
    stopping.join(60)
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["result"]["detectedObjects"][0]["bbox"] == [0.0, 0.0, 160.0, 240.0]
    assert not server.thread.is_alive()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_the_demo_page_is_one_self_contained_file(live, echo_predictor) -> None:
    server = live(create_app(echo_predictor))
    page = requests.get(server.url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    text = page.text
    assert "/small-object-detection" in text and "fake" in text  # the endpoint and the model's name
    assert "http://" not in text and "https://" not in text and "src=\"//" not in text  # nothing external
