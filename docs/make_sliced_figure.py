"""Render the README's sliced-inference picture: a large generated aerial scene, detected whole and in slices.

The model is make_example_figure.py's (SOD-S trained here for a few minutes on 320x320 generated scenes with objects
of 5-26 px; the official weights cannot be downloaded on the machines this project is built on). The large scene is
a mosaic of such scenes, 2400x1600. Detected whole, it is shrunk to the network's 320x320 input and the objects
vanish; in 320-pixel slices (overlap 0.2, SAHI's merge) each slice is seen at full resolution. Run:

    python docs/make_sliced_figure.py           # writes docs/images/sliced_example.png (training: minutes on 2 cores)
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_example_figure import SIZE, scene, train_predictor  # noqa: E402
from ppyoloe_sod.draw import class_color, get_font  # noqa: E402
from ppyoloe_sod.infer.predictor import DetPredictor  # noqa: E402
from ppyoloe_sod.infer.slicing import SliceConfig, slice_grid  # noqa: E402

WIDTH, HEIGHT = 2400, 1600
SLICE = SliceConfig(size=SIZE, overlap=0.2)
OVERVIEW_SCALE = 0.45  # the whole scene, shrunk to 1080x720
ZOOM = (1260, 560, 1790, 920)  # a 530x360 part shown at full resolution, unsliced and sliced
GRID, FRAME, INK, PAPER = (255, 255, 255), (255, 230, 0), (255, 255, 255), (20, 20, 20)
SCENE_COLORS = 28  # the PNG's palette: this many for the scene, plus the drawing's own colours exactly


def large_scene(seed: int = 7) -> np.ndarray:
    """A WIDTH x HEIGHT mosaic of make_example_figure's scenes (none of them a training scene)."""
    rng = np.random.default_rng(seed)
    rows, cols = -(-HEIGHT // SIZE), -(-WIDTH // SIZE)
    tiles = [[scene(rng, 25)[0] for _ in range(cols)] for _ in range(rows)]
    return np.vstack([np.hstack(row) for row in tiles])[:HEIGHT, :WIDTH].copy()


def draw_boxes(image_rgb: np.ndarray, boxes: list[dict], scale: float, offset: tuple[int, int] = (0, 0),
               grid: list[tuple[int, int, int, int]] = ()) -> Image.Image:
    """Boxes only (no labels: at this density they would hide the objects), in draw.py's class colours, and the
    slice grid in white; coordinates in scene pixels, drawn at ``scale`` after moving by ``-offset``."""
    canvas = Image.fromarray(image_rgb)
    pen = ImageDraw.Draw(canvas)
    ox, oy = offset
    for x1, y1, x2, y2 in grid:
        pen.rectangle([(x1 - ox) * scale, (y1 - oy) * scale, (x2 - ox) * scale - 1, (y2 - oy) * scale - 1],
                      outline=GRID, width=1)
    for box in boxes:
        x1, y1, x2, y2 = box["coordinate"]
        pen.rectangle([(x1 - ox) * scale - 1, (y1 - oy) * scale - 1, (x2 - ox) * scale, (y2 - oy) * scale],
                      outline=class_color(box["cls_id"]), width=2)
    return canvas


def caption(panel: Image.Image, text: str) -> Image.Image:
    pen = ImageDraw.Draw(panel)
    font = get_font(18)
    left, top, right, bottom = pen.textbbox((6, 4), text, font=font)
    pen.rectangle([left - 4, top - 3, right + 4, bottom + 3], fill=PAPER)
    pen.text((6, 4), text, fill=INK, font=font)
    return panel


def inside(boxes: list[dict], area: tuple[int, int, int, int]) -> list[dict]:
    x1, y1, x2, y2 = area
    return [b for b in boxes if b["coordinate"][2] > x1 and b["coordinate"][0] < x2 and b["coordinate"][3] > y1
            and b["coordinate"][1] < y2]


def with_palette(figure: Image.Image, exact: list[tuple[int, int, int]]) -> Image.Image:
    """The figure in a small palette (the noisy ground texture stays under 400 KB as PNG): SCENE_COLORS fitted to
    the picture, plus the drawing's colours exactly."""
    fitted = figure.quantize(colors=SCENE_COLORS, dither=Image.Dither.NONE).getpalette()[: 3 * SCENE_COLORS]
    palette = Image.new("P", (1, 1))
    palette.putpalette(fitted + [v for colour in exact for v in colour])
    return figure.quantize(palette=palette, dither=Image.Dither.NONE)


def render(predictor: DetPredictor, out: Path) -> None:
    image = large_scene()
    [whole] = predictor.predict(image)
    [sliced] = predictor.predict(image, slice=SLICE)
    grid = slice_grid(HEIGHT, WIDTH, SLICE)
    print(f"whole image: {len(whole.boxes)} boxes; {len(grid)} slices + the whole image: {len(sliced.boxes)} boxes")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, None, fx=OVERVIEW_SCALE, fy=OVERVIEW_SCALE, interpolation=cv2.INTER_AREA)
    overview = draw_boxes(small, sliced.boxes, OVERVIEW_SCALE, grid=grid)
    ImageDraw.Draw(overview).rectangle([v * OVERVIEW_SCALE for v in ZOOM], outline=FRAME, width=3)
    overview = caption(overview, f"{WIDTH}x{HEIGHT}, {len(grid)} slices of {SIZE} (white), {len(sliced.boxes)} "
                                 f"boxes; below: the yellow frame at full size")
    x1, y1, x2, y2 = ZOOM
    crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
    left = caption(draw_boxes(crop, inside(whole.boxes, ZOOM), 1.0, (x1, y1)),
                   f"whole image at {SIZE}: {len(inside(whole.boxes, ZOOM))} boxes here")
    right = caption(draw_boxes(crop, inside(sliced.boxes, ZOOM), 1.0, (x1, y1)),
                    f"sliced: {len(inside(sliced.boxes, ZOOM))} boxes here")
    figure = Image.new("RGB", (overview.width, overview.height + left.height + 8), (255, 255, 255))
    figure.paste(overview, (0, 0))
    figure.paste(left, (0, overview.height + 8))
    figure.paste(right, (overview.width - right.width, overview.height + 8))
    out.parent.mkdir(parents=True, exist_ok=True)
    with_palette(figure, [GRID, FRAME, INK, PAPER, *(class_color(c) for c in range(len(predictor.labels)))]).save(
        out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main(steps: int = 240, out: Path = ROOT / "docs" / "images" / "sliced_example.png") -> None:
    render(train_predictor(steps), out)


if __name__ == "__main__":
    main()
