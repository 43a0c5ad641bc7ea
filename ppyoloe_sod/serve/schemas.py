"""The request and response bodies of PaddleX 3.7.2's basic serving for the small_object_detection pipeline.

Written from PaddleX's published contract (``paddlex/inference/serving/schemas/small_object_detection.py`` and
``infra/models.py``): the same model names, field names, types and defaults, so the JSON schema they generate is
PaddleX's (``tests/serve/test_schemas.py`` compares them with PaddleX's own models). Only pydantic is imported
here, so the file also loads in PaddleX's virtual environment for that comparison.
"""
from __future__ import annotations

from typing import Dict, Generic, List, Literal, Optional, Tuple, TypeVar, Union

from pydantic import BaseModel

INFER_ENDPOINT = "/small-object-detection"
HEALTH_ENDPOINT = "/health"

BoundingBox = Tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the sent image


# No docstrings on the models: pydantic would put them into the JSON schema, which must stay PaddleX's.

# image: an http(s) URL or the base64 of the file's bytes; threshold: a score threshold, per class as
# {cls_id: threshold}, or null for the server's; visualize: return the drawing (null: the server's setting).
class InferRequest(BaseModel):
    image: str
    threshold: Optional[Union[float, Dict[int, float]]] = None
    visualize: Optional[bool] = None


class DetectedObject(BaseModel):
    bbox: BoundingBox
    categoryId: int
    categoryName: str
    score: float


class InferResult(BaseModel):
    detectedObjects: List[DetectedObject]
    image: Optional[str] = None  # base64 JPEG of the drawing; left out of the JSON when not asked for


# The health answer and every error: errorCode is the HTTP status (0 for health).
class AIStudioNoResultResponse(BaseModel):
    logId: str
    errorCode: int
    errorMsg: str


ResultT = TypeVar("ResultT", bound=BaseModel)


class AIStudioResultResponse(BaseModel, Generic[ResultT]):
    logId: str
    result: ResultT
    errorCode: Literal[0] = 0
    errorMsg: Literal["Success"] = "Success"


InferResponse = AIStudioResultResponse[InferResult]
