"""An interrupted conversion or split leaves the dataset byte for byte as it was."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from data_synth import coco_dict, scene, tree_digest, write_voc
from ppyoloe_sod.data import layout
from ppyoloe_sod.data.check_dataset import check_dataset
from ppyoloe_sod.data.converters import convert_dataset, voc
from ppyoloe_sod.data.split import split_dataset


@pytest.fixture
def voc_root(tmp_path):
    imgs = scene(6)
    write_voc(tmp_path, imgs, None)  # no val list: conversion also rewrites the list files
    (tmp_path / "annotations" / "instance_train.json").write_text(json.dumps(coco_dict(imgs[:1], ["car"])))
    return tmp_path


def test_exception_while_reading_the_source(voc_root, monkeypatch):
    real, calls = voc._parse, []

    def flaky(path, problems):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("simulated crash in the middle of the conversion")
        return real(path, problems)

    monkeypatch.setattr(voc, "_parse", flaky)
    before = tree_digest(voc_root)
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert_dataset(voc_root, "VOC")
    assert tree_digest(voc_root) == before


def _flaky_staging(monkeypatch, fail_name: str, when: str, exc: BaseException):
    """Make the staged write of ``fail_name``'s new content fail before it starts or once it is complete."""
    real = layout.write_file_durably

    def fake(path, data, mode):
        target = Path(path).name == f".{fail_name}{layout.STAGED_SUFFIX}"
        if when == "open" and target:
            raise exc
        real(path, data, mode)
        if when == "close" and target:
            raise exc  # the staged file is complete but the commit point is not reached

    monkeypatch.setattr(layout, "write_file_durably", fake)


@pytest.mark.parametrize("fail_name, when, exc", [
    ("instance_val.json", "open", OSError("disk full")),
    # The list files and their backups are staged before instance_train.json: they must be removed again.
    ("instance_train.json", "close", KeyboardInterrupt()),
])
def test_exception_while_writing_the_result(voc_root, monkeypatch, fail_name, when, exc):
    _flaky_staging(monkeypatch, fail_name, when, exc)
    before = tree_digest(voc_root)
    with pytest.raises(type(exc)):
        convert_dataset(voc_root, "VOC")
    assert tree_digest(voc_root) == before  # no new file, no backup, no journal or staged file left


def test_split_interrupted(voc_root, monkeypatch):
    monkeypatch.undo()
    convert_dataset(voc_root, "VOC")
    _flaky_staging(monkeypatch, "instance_train.json", "close", RuntimeError("power cut"))
    before = tree_digest(voc_root)
    with pytest.raises(RuntimeError, match="power cut"):
        split_dataset(voc_root, 50, 50)
    assert tree_digest(voc_root) == before


def test_check_alone_writes_nothing_into_the_dataset(voc_root, tmp_path_factory):
    convert_dataset(voc_root, "VOC")
    before = tree_digest(voc_root)
    out = tmp_path_factory.mktemp("out")
    assert check_dataset(voc_root, out)["check_pass"] is True
    assert tree_digest(voc_root) == before
