"""Video input and annotated video output (ppyoloe_sod/infer/video.py through predict and the CLI), on clips made
here with OpenCV: frame choice and indices, streaming, names, errors, and the annotated video."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ppyoloe_sod.errors import ConfigError, ImageReadError
from ppyoloe_sod.infer import predictor as predictor_module
from ppyoloe_sod.infer.video import VideoConfig, frame_video_stem, iter_frames, probe_video

FRAMES, WIDTH, HEIGHT, FPS = 20, 64, 48, 10.0
LEVEL_STEP = 12  # frame i is uniformly gray at i * LEVEL_STEP: lossy codecs keep it within a few levels
BOX = [4.0, 6.0, 30.0, 26.0]


def make_clip(path: Path, frames: int = FRAMES, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((HEIGHT, WIDTH, 3), i * LEVEL_STEP, np.uint8))
    writer.release()
    return path


def frame_number(image: np.ndarray) -> int:
    """Which frame of make_clip's clip ``image`` is (from its gray level)."""
    return int(round(float(image.mean()) / LEVEL_STEP))


def read_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


@pytest.fixture()
def boxing_predictor(blind_predictor):
    """The blind predictor, but every image gets one box (so drawings differ from the frames)."""
    blind_predictor.detect_batch = lambda images: [np.array([[1, 0.9, *BOX]], np.float32) for _ in images]
    return blind_predictor


@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG"), (".mov", "mp4v")])
def test_one_result_per_kept_frame_with_its_index(boxing_predictor, tmp_path, suffix, fourcc):
    clip = make_clip(tmp_path / f"clip{suffix}", fourcc=fourcc)
    results = list(boxing_predictor.predict(str(clip), batch_size=3, video={"stride": 3, "start": 2, "end": 15}))
    assert [r.page_index for r in results] == [2, 5, 8, 11, 14]
    assert [frame_number(r.input_img) for r in results] == [2, 5, 8, 11, 14]  # the frames themselves, no drift
    assert {r.input_path for r in results} == {str(clip)}
    assert [r.save_name for r in results] == [f"clip_{i}{suffix}" for i in (2, 5, 8, 11, 14)]
    assert results[0].boxes == [{"cls_id": 1, "label": "car", "score": pytest.approx(0.9), "coordinate": BOX}]
    assert results[0].json["res"]["page_index"] == 2
    assert results[0].save_to_img(tmp_path / "out").name == "clip_2_res.png"
    assert results[0].save_to_json(tmp_path / "out").name == "clip_2_res.json"


def test_every_frame_by_default_and_mixed_with_images(boxing_predictor, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    cv2.imwrite(str(tmp_path / "clip.png"), np.zeros((8, 8, 3), np.uint8))
    results = list(boxing_predictor.predict([str(tmp_path / "clip.png"), str(clip)], batch_size=4))
    assert [r.page_index for r in results] == [None, *range(FRAMES)]
    names = [r.save_name for r in results]
    assert names[:3] == ["clip.png", "clip-2_0.mp4", "clip-2_1.mp4"]  # distinct from the image's name
    assert frame_video_stem(names[2], 1) == "clip-2"


def test_frame_names_never_take_an_images_name(boxing_predictor, tmp_path):
    """clip.mp4's frame 3 would be clip_3, the name of the image clip_3.jpg (and CLIP_1.png's, case aside): the
    video's frames take the next free stem, clip-2_<frame>, and every result saves under its own name."""
    clip = make_clip(tmp_path / "clip.mp4", frames=5)
    for name in ("clip_3.jpg", "CLIP_1.png", "clip-2.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    inputs = [str(clip), str(tmp_path / "clip_3.jpg"), str(tmp_path / "CLIP_1.png"), str(tmp_path / "clip-2.png")]
    results = list(boxing_predictor.predict(inputs, batch_size=2))
    names = [r.save_name for r in results]
    assert names == [f"clip-3_{i}.mp4" for i in range(5)] + ["clip_3.jpg", "CLIP_1.png", "clip-2.png"]
    assert {frame_video_stem(n, i) for n, i in zip(names, range(5))} == {"clip-3"}
    out = tmp_path / "out"
    saved = {res.save_to_json(out).name for res in results}
    assert len(saved) == len(results) == len(list(out.iterdir()))
    # no clash: the frames keep PaddleX's name
    alone = [r.save_name for r in boxing_predictor.predict([str(clip), str(tmp_path / "clip-2.png")])]
    assert alone == [f"clip_{i}.mp4" for i in range(5)] + ["clip-2.png"]


def test_frames_are_streamed_not_loaded_at_once(boxing_predictor, tmp_path, monkeypatch):
    """Bounded memory: after the first batch only that batch's frames have been decoded."""
    clip = make_clip(tmp_path / "clip.mp4")
    decoded = []

    def counting_iter_frames(path, cfg):
        for index, frame in iter_frames(path, cfg):
            decoded.append(index)
            yield index, frame

    monkeypatch.setattr(predictor_module, "iter_frames", counting_iter_frames)
    stream = boxing_predictor.predict(str(clip), batch_size=4)
    next(stream)
    assert decoded == [0, 1, 2, 3]
    stream.close()


@pytest.mark.parametrize("make_bad", [
    lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()),
    lambda p: p.write_bytes(make_clip(p.with_name("good.mp4")).read_bytes()[:900]),  # truncated
    lambda p: p.write_bytes(b""),
])
def test_corrupt_or_unreadable_video_is_an_error_naming_it(blind_predictor, tmp_path, make_bad):
    bad = tmp_path / "bad.mp4"
    make_bad(bad)
    with pytest.raises(ImageReadError, match=r"Cannot read video .*bad\.mp4.*corrupt or truncated"):
        next(blind_predictor.predict([np.zeros((8, 8, 3), np.uint8), str(bad)]))  # before any result


def test_video_inputs_follow_the_file_rules(blind_predictor, tmp_path, caplog):
    (tmp_path / "dir").mkdir()
    make_clip(tmp_path / "dir" / "clip.mp4")
    cv2.imwrite(str(tmp_path / "dir" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with caplog.at_level(logging.WARNING):
        assert [r.input_path for r in blind_predictor.predict(str(tmp_path / "dir"))] == [
            str(tmp_path / "dir" / "a.png")]
    assert "clip.mp4 (a video: pass its path to predict on it)" in caplog.text
    with pytest.raises(ImageReadError, match="Video URLs are not read.*download"):
        list(blind_predictor.predict("https://example.com/clip.mp4"))
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(ImageReadError, match="pipe.mp4.*not a regular file"):
        list(blind_predictor.predict(str(tmp_path / "pipe.mp4")))
    make_clip(tmp_path / ".hidden.mp4")  # given explicitly: used, as hidden images are
    assert len(list(blind_predictor.predict(str(tmp_path / ".hidden.mp4"), video={"end": 2}))) == 2
    blind_predictor.max_pixels = WIDTH * HEIGHT - 1
    with pytest.raises(ImageReadError, match=r"hidden\.mp4.*64x48.*over the limit"):
        list(blind_predictor.predict(str(tmp_path / ".hidden.mp4")))


@pytest.mark.parametrize("video,words", [
    ({"stride": 0}, ["video stride", ">= 1"]),
    ({"start": -1}, ["video start", ">= 0"]),
    ({"start": 5, "end": 5}, ["video end", "after start (5)"]),
    ({"every": 2}, ["'every'", "known: stride, start, end"]),
    ("all", ["video must be"]),
])
def test_bad_video_options_name_the_key(blind_predictor, tmp_path, video, words):
    with pytest.raises(ConfigError) as err:
        list(blind_predictor.predict(str(make_clip(tmp_path / "clip.mp4")), video=video))
    for word in words:
        assert word in str(err.value)


def test_frames_outside_the_video_give_nothing_and_say_so(blind_predictor, tmp_path, caplog):
    clip = make_clip(tmp_path / "clip.mp4")
    assert probe_video(str(clip)) == (WIDTH, HEIGHT, FPS, FRAMES)
    assert VideoConfig(stride=3, start=2, end=15).kept(FRAMES) == 5 and VideoConfig(start=18).kept(FRAMES) == 2
    with caplog.at_level(logging.WARNING):
        assert list(blind_predictor.predict(str(clip), video={"start": 50})) == []
    assert "no frame from 50 to the end (it has 20 frames)" in caplog.text


@pytest.fixture()
def cli_predict(boxing_predictor, monkeypatch):
    """run_predict with create_model replaced by the boxing predictor."""
    from ppyoloe_sod.config import load_config
    from ppyoloe_sod.errors import interface

    monkeypatch.setattr(predictor_module, "create_model", lambda name, **kwargs: boxing_predictor)

    def run(*overrides):
        with interface("cli"):
            return predictor_module.run_predict(load_config(None, ["Global.mode=predict", *overrides]))

    return run


def test_cli_save_video_writes_the_drawn_frames_in_order_beside_the_json(cli_predict, tmp_path, capsys):
    clip = make_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    count = cli_predict(f"Predict.input={clip}", f"Global.output={out}", "Predict.save_video=True",
                        "Predict.video.stride=2", "Predict.video.start=1")
    kept = list(range(1, FRAMES, 2))
    assert count == len(kept)
    assert sorted(p.name for p in out.iterdir()) == sorted(["clip_res.mp4", *(f"clip_{i}_res.json" for i in kept)])
    frames, fps = read_all(out / "clip_res.mp4")
    assert fps == pytest.approx(FPS / 2)
    assert [f.shape for f in frames] == [(HEIGHT, WIDTH, 3)] * len(kept)
    # Each written frame is its source frame (in order; compressed twice, so a level within a step) with the box.
    levels = [float(frame[40:, 40:].mean()) for frame in frames]
    assert levels == sorted(levels)
    assert all(abs(level - i * LEVEL_STEP) < LEVEL_STEP for i, level in zip(kept, levels))
    x1, y1 = int(BOX[0]), int(BOX[1])
    for i, frame in zip(kept, frames):
        assert np.abs(frame[y1 + 4, x1].astype(int) - i * LEVEL_STEP).max() > 40  # the box line, not the background
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{clip} frame 1: 1 box (car 1) -> {out / 'clip_res.mp4'}, clip_1_res.json"
    assert lines[-1].endswith("(a JSON file each; video frames drawn in clip_res.mp4)")


def test_cli_without_save_video_draws_each_frame(cli_predict, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    out = tmp_path / "out"
    assert cli_predict(f"Predict.input={clip}", f"Global.output={out}") == 3
    expected = [f"clip_{i}_res.{suffix}" for i in range(3) for suffix in ("json", "png")]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)


def test_an_interrupted_run_leaves_no_partial_video(cli_predict, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    (tmp_path / "zbad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    with pytest.raises(ImageReadError, match="zbad.png"):
        cli_predict(f"Predict.input=[{str(clip)!r}, {str(tmp_path / 'zbad.png')!r}]", f"Global.output={out}",
                    "Predict.save_video=True")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"clip_{i}_res.json" for i in range(FRAMES))


def test_cli_bad_video_key_names_the_section(cli_predict, tmp_path):
    with pytest.raises(ConfigError, match=r"Predict\.video: video stride must be an integer >= 1, got 0"):
        cli_predict(f"Predict.input={make_clip(tmp_path / 'clip.mp4')}", "Predict.video.stride=0")
