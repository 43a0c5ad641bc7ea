"""Global.mode=serve from the command line: its settings, its errors, and a real server process (two workers)
answering PaddleX's client with the detections of ``create_model(...).predict``."""
from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
import requests

import ppyoloe_sod.__main__ as cli
from ppyoloe_sod.config import load_config
from ppyoloe_sod.errors import ConfigError
from ppyoloe_sod.serve import ServeSettings, run_serve

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "PP-YOLOE_plus_SOD-S.yaml")


def test_settings_are_predict_s_model_keys_and_the_serve_section() -> None:
    cfg = load_config(CONFIG, ["Global.mode=serve", "Global.device=cpu", "Predict.model_dir=w.safetensors",
                               "Predict.threshold={2: 0.3}", "Predict.kernel_option.run_mode=onnxruntime",
                               "Serve.port=9000", "Serve.max_batch_size=4", "Serve.workers=2"])
    settings = ServeSettings.from_config(cfg)
    assert settings.predictor == {"model_name": "PP-YOLOE_plus_SOD-S", "model_dir": "w.safetensors", "device": "cpu",
                                  "threshold": {2: 0.3}, "use_hpip": True, "max_pixels": 178_956_970,
                                  "hpi_config": {"backend": "onnxruntime"}}
    assert (settings.serve.port, settings.serve.max_batch_size, settings.serve.workers) == (9000, 4, 2)
    assert settings.torch_threads == max(1, (os.cpu_count() or 1) // 2)  # the cores shared by the workers
    assert ServeSettings.from_json(settings.to_json()) == settings  # as the worker processes receive them


@pytest.mark.parametrize("run_mode", ["openvino", "onnxruntime", "paddle"])
def test_each_server_process_loads_the_model_predict_loads(run_mode, monkeypatch, tmp_path) -> None:
    """A server process (its settings through JSON, as Serve.workers > 1 hands them) calls create_model as
    Global.mode=predict does, Predict.kernel_option.run_mode included (openvino was ignored and onnxruntime ran
    on use_hpip's own pick)."""
    from batch.batch_synth import StopLoading, record_create_model
    from ppyoloe_sod.infer.predictor import run_predict
    from ppyoloe_sod.serve import load_predictor

    calls = record_create_model(monkeypatch)
    cfg = load_config(CONFIG, ["Global.device=cpu", "Predict.threshold={1: 0.4}", f"Predict.input={tmp_path}",
                               f"Predict.kernel_option.run_mode={run_mode}"])
    with pytest.raises(StopLoading):
        run_predict(cfg)
    with pytest.raises(StopLoading):
        load_predictor(ServeSettings.from_json(ServeSettings.from_config(cfg).to_json()))
    assert calls[1] == calls[0]
    assert calls[0]["use_hpip"] is (run_mode != "paddle") and calls[0]["threshold"] == {1: 0.4}


@pytest.mark.parametrize("override, message", [
    ("Serve.workers=0", "Serve.workers must be >= 1, got 0"),
    ("Serve.max_batch_size=0", "Serve.max_batch_size must be >= 1"),
    ("Serve.port=70000", "Serve.port must be between 0 and 65535"),
    ("Serve.max_wait_ms=-1", "Serve.max_wait_ms must be >= 0"),
    ("Serve.max_queue=0", "Serve.max_queue must be >= 1"),
    ("Serve.max_body_mb=0", "Serve.max_body_mb must be > 0"),
])
def test_impossible_serve_values_are_errors_naming_the_key(override, message, capsys) -> None:
    rc = cli.main(["-c", CONFIG, "-o", "Global.mode=serve", "-o", override])
    assert rc == cli.EXIT_ERROR and message in capsys.readouterr().err


def test_without_the_serve_extra_the_error_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn fails as if not installed
    with pytest.raises(ConfigError, match=r"needs FastAPI and uvicorn \(uvicorn is missing\): pip install "
                                          r"'ppyoloe-sod\[serve\]'"):
        run_serve(load_config(CONFIG, ["Global.mode=serve"]))


def test_the_serve_shortcut_is_global_mode_serve(monkeypatch) -> None:
    seen = []
    monkeypatch.setitem(cli._ENTRY_POINTS, "serve", ("ppyoloe_sod.serve", "ServeSettings"))
    monkeypatch.setattr("ppyoloe_sod.serve.ServeSettings", lambda cfg: seen.append(cfg) or 0)
    assert cli.main(["serve", "-c", CONFIG, "-o", "Serve.port=9001"]) == 0
    assert seen[0].Global.mode == "serve" and seen[0].Serve.port == 9001


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory, serve_detector) -> Path:
    from ppyoloe_sod.models import safetensors_metadata
    from ppyoloe_sod.weights.store import save_safetensors

    path = tmp_path_factory.mktemp("weights") / "sod_s_random.safetensors"
    save_safetensors(serve_detector.state_dict(), path, safetensors_metadata(serve_detector.spec))
    return path


class ServerProcess:
    """``python -m ppyoloe_sod ... Global.mode=serve`` on 127.0.0.1, any free port; its log is collected."""

    def __init__(self, overrides: list[str]) -> None:
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ppyoloe_sod", "-c", CONFIG, "-o", "Global.mode=serve", "-o", "Serve.port=0",
             "-o", "Serve.host=127.0.0.1", *[a for o in overrides for a in ("-o", o)]],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def url(self, limit_s: float = 240) -> str:
        end = time.monotonic() + limit_s
        while time.monotonic() < end and self.proc.poll() is None:
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", "".join(self.lines))
            if found:
                return f"http://127.0.0.1:{found.group(1)}"
            time.sleep(0.1)
        raise AssertionError("the server did not start:\n" + "".join(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(10)


def threshold_in_a_gap(scores, low: float = 0.3, high: float = 0.7) -> float:
    """The middle of the widest gap between the scores in [low, high]: no score sits near this threshold, so
    float noise between two runs of the network (other thread counts) cannot move a box across it."""
    points = sorted([low, high, *[float(s) for s in scores if low < s < high]])
    gap_start, gap_end = max(zip(points, points[1:]), key=lambda pair: pair[1] - pair[0])
    return (gap_start + gap_end) / 2


@pytest.mark.slow
def test_a_server_process_with_two_workers_answers_the_paddlex_client(random_weights, street, tmp_path) -> None:
    from ppyoloe_sod import create_model

    image_path = tmp_path / "demo.png"
    cv2.imwrite(str(image_path), street)
    model = create_model("PP-YOLOE_plus_SOD-S", model_dir=random_weights, device="cpu")
    threshold = threshold_in_a_gap(model.detect_batch([street])[0][:, 1])
    expected = next(model.predict(str(image_path), threshold=threshold)).boxes
    assert len(expected) > 0
    del model
    server = ServerProcess(["Global.device=cpu", f"Predict.model_dir={random_weights}", "Serve.workers=2"])
    try:
        url = server.url()
        for _ in range(600):  # the workers load the model before they accept
            try:
                if requests.get(url + "/health", timeout=60).json()["errorMsg"] == "Healthy":
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        # PaddleX's client, as its documentation gives it (plus the threshold)
        with open(image_path, "rb") as file:
            image_data = base64.b64encode(file.read()).decode("ascii")
        payload = {"image": image_data, "threshold": threshold}
        response = requests.post(url + "/small-object-detection", json=payload, timeout=240)
        assert response.status_code == 200, response.text
        result = response.json()["result"]
    finally:
        rc = server.stop()
    log = "".join(server.lines)
    assert rc == 0, log
    assert len(set(re.findall(r"Started server process \[(\d+)\]", log))) == 2, log  # two workers
    got = result["detectedObjects"]
    assert [(o["categoryId"], o["categoryName"]) for o in got] == [(b["cls_id"], b["label"]) for b in expected]
    for o, b in zip(got, expected):
        # one thread per worker here against all cores above: float32 sums in another order (~1e-5)
        assert o["bbox"] == pytest.approx(b["coordinate"], abs=1e-2) and o["score"] == pytest.approx(b["score"],
                                                                                                   abs=2e-4)
    assert base64.b64decode(result["image"])[:2] == b"\xff\xd8"
