"""OpenVINO IR (model.xml + model.bin) from the exported ONNX graph."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def export_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert ``onnx_path`` to OpenVINO IR at ``xml_path`` (its weights beside it, same name, ``.bin``).

    Weights stay float32 (OpenVINO would store float16 by default, which fp32 inference could not undo); the
    inference precision is chosen when the model is compiled (``OpenVINOBackend``). OpenVINO writes both files
    itself, so ``xml_path`` must be in a staging folder that is published whole (see ``export.publish_folder``).
    """
    try:
        import openvino as ov
    except ImportError:
        raise ConfigError("Export.format=openvino needs the openvino package, which is not installed: pip install "
                          "openvino (or pip install 'ppyoloe-sod[openvino]')") from None
    xml_path = Path(xml_path)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path
