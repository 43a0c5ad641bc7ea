"""Shared fixtures for the export tests: the real SOD-S network with random, calibrated weights, exported once
(OpenVINO format: model.onnx and the IR) at 320x320, the size the inference tests use on the test CPUs."""
from __future__ import annotations

import copy
import shutil

import pytest

from export_parity import SIZE
from infer.infer_synth import seeded_random_detector


@pytest.fixture(scope="session")
def random_detector():
    """A SOD-S Detector with random (deterministic) weights, eval mode, unfused. Do not modify it in a test."""
    return seeded_random_detector()


@pytest.fixture(scope="session")
def fused_detector(random_detector):
    """random_detector with BatchNorms and RepVGG branches folded: what create_model runs on PyTorch."""
    return copy.deepcopy(random_detector).fuse()


@pytest.fixture(scope="session")
def openvino_export(tmp_path_factory, random_detector):
    """An export folder of random_detector, format openvino, fp32, at 320x320. Read-only: copy it to change it."""
    from ppyoloe_sod.export import export_model

    return export_model(random_detector, tmp_path_factory.mktemp("exports") / "sod_s_openvino", format="openvino",
                        input_size=SIZE)


@pytest.fixture()
def export_copy(tmp_path, openvino_export):
    """A copy of the export folder that a test may change."""
    return shutil.copytree(openvino_export, tmp_path / "export")
