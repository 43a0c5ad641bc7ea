"""A split or a conversion killed (SIGKILL) after ANY filesystem step leaves, once the next dataset command has
run, exactly the old dataset or exactly the new one: same files, same bytes, same modes, nothing else."""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import traceback
from pathlib import Path
from typing import Callable, Iterator

import pytest
from data_synth import coco_dict, scene, write_coco_dataset, write_voc
from ppyoloe_sod.data import layout
from ppyoloe_sod.data.check_dataset import check_dataset
from ppyoloe_sod.data.converters import convert_dataset
from ppyoloe_sod.data.layout import JOURNAL_NAME, find_dataset_root, recover_dataset
from ppyoloe_sod.data.split import split_dataset
from ppyoloe_sod.errors import DatasetError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked child")

# Every os call that creates, changes, moves or removes a file or folder (plus opens and fsyncs): a kill is
# injected right after each one.
STEP_CALLS = ("open", "write", "fchmod", "chmod", "fsync", "replace", "rename", "unlink", "remove", "mkdir",
              "rmdir", "link", "truncate", "ftruncate")

Snapshot = dict[str, tuple[bytes, int]]


def snapshot(root: Path) -> Snapshot:
    """Relative path -> (content, permission bits) of every file under root, hidden ones included."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file()}


def differing(a: Snapshot, b: Snapshot) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def run_in_child(action: Callable[[], object], kill_after: int | None) -> tuple[bool, int]:
    """Run ``action`` in a forked child that SIGKILLs itself right after its ``kill_after``-th step.

    Returns (killed, steps counted); the child reports its count and any exception through a pipe.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_end)
        real_write = os.write
        report = "0"
        try:
            count = 0

            def counted(real):
                def step(*args, **kwargs):
                    nonlocal count
                    result = real(*args, **kwargs)
                    count += 1
                    if count == kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return result
                return step

            for name in STEP_CALLS:
                if hasattr(os, name):
                    setattr(os, name, counted(getattr(os, name)))
            action()
            report = str(count)
        except BaseException:
            report = "error\n" + traceback.format_exc()
        finally:
            real_write(write_end, report.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True, kill_after
    assert not report.startswith("error"), report
    return False, int(report)


def count_steps(template: Path, work: Path, action: Callable[[Path], object]) -> int:
    shutil.copytree(template, work)
    killed, steps = run_in_child(lambda: action(work), None)
    assert not killed and steps > 0
    return steps


def outcomes_after_kills(template: Path, scratch: Path, action: Callable[[Path], object],
                         recover: Callable[[Path], object], after: Callable[[Path], object]) -> dict[str, int]:
    """Kill ``action`` after each of its steps on a fresh copy of ``template``, recover, and check the result."""
    old = snapshot(template)
    done = scratch / "uninterrupted"
    steps = count_steps(template, done, action)
    new = snapshot(done)
    assert new != old
    seen = {"old": 0, "new": 0}
    for k in range(1, steps + 1):
        work = scratch / f"killed_after_{k}"
        shutil.copytree(template, work)
        assert run_in_child(lambda: action(work), k)[0], f"the child was not killed after step {k}"
        recover(work)
        state = snapshot(work)
        assert state in (old, new), (f"killed after step {k}: neither the old nor the new dataset (differs from "
                                     f"the old in {differing(state, old)}, from the new in {differing(state, new)})")
        seen["old" if state == old else "new"] += 1
        after(work)  # and the dataset works for the next operation
        shutil.rmtree(work)
    return seen


def make_coco_template(root: Path) -> Path:
    imgs = scene(8)
    write_coco_dataset(root, imgs[:5], imgs[5:])
    ann = root / "annotations"
    (ann / "instance_train.json.bak").write_text("an older backup, kept")  # the new one is .bak1
    os.chmod(ann / "instance_train.json", 0o640)
    return root


@pytest.fixture
def coco_template(tmp_path):
    return make_coco_template(tmp_path / "coco")


@pytest.fixture
def voc_template(tmp_path):
    imgs = scene(4)
    root = tmp_path / "voc"
    write_voc(root, imgs, None)  # no val list: conversion also writes both list files, backing up the train one
    (root / "annotations" / "instance_train.json").write_text(json.dumps(coco_dict(imgs[:1], ["car"])))
    return root


def _check_split(root: Path) -> None:
    summary = split_dataset(root, 70, 30)
    ann = root / "annotations"
    names = [{im["file_name"] for im in json.loads((ann / f"instance_{s}.json").read_text())["images"]}
             for s in ("train", "val")]
    assert (len(names[0]), len(names[1]), len(names[0] | names[1])) == (6, 2, 8)
    assert summary["train_images"] == 6


def test_split_killed_after_every_step(coco_template, tmp_path):
    seen = outcomes_after_kills(coco_template, tmp_path / "runs", split_50_50, find_dataset_root, _check_split)
    # Both outcomes happen: kills before the commit point undo, kills after it complete.
    assert seen["old"] > 0 and seen["new"] > 0


def test_conversion_killed_after_every_step(voc_template, tmp_path):
    seen = outcomes_after_kills(voc_template, tmp_path / "runs", lambda r: convert_dataset(r, "VOC"),
                                find_dataset_root, lambda r: convert_dataset(r, "VOC"))
    assert seen["old"] > 0 and seen["new"] > 0


def journaled_kills(template: Path, scratch: Path, action: Callable[[Path], object]) -> Iterator[tuple[str, Path]]:
    """(journal state, dataset as the kill left it, before recovery) for each step, in order, after which a
    journal is on disk."""
    for k in range(1, count_steps(template, scratch / "count", action) + 1):
        work = scratch / f"state_{k}"
        shutil.copytree(template, work)
        run_in_child(lambda: action(work), k)
        if (work / JOURNAL_NAME).exists():
            yield json.loads((work / JOURNAL_NAME).read_text())["state"], work


def split_50_50(root: Path) -> None:
    split_dataset(root, 50, 50)


@pytest.fixture(scope="module")
def killed_splits(tmp_path_factory) -> dict[str, Path]:
    """Datasets as a split killed at chosen points left them: ``staged`` (everything staged, journal still in
    state staging), ``committed`` (journal committing, no rename done) and ``renaming`` (one rename done)."""
    scratch = tmp_path_factory.mktemp("killed_splits")
    template = make_coco_template(scratch / "template")
    staging, committing = [], []
    for state, killed in journaled_kills(template, scratch, split_50_50):
        (committing if state == "committing" else staging).append(killed)
        if len(committing) == 2:
            break
    return {"template": template, "staged": staging[-1], "committed": committing[0], "renaming": committing[1]}


def test_recovery_killed_after_every_step(killed_splits, tmp_path):
    """A kill during recovery is recovered by the next run, for a staging and for a committing journal."""
    done = tmp_path / "done"
    shutil.copytree(killed_splits["template"], done)
    split_50_50(done)
    expected = {"staged": snapshot(killed_splits["template"]), "renaming": snapshot(done)}
    for name, want in expected.items():
        killed = killed_splits[name]
        steps = count_steps(killed, tmp_path / f"count_{name}", recover_dataset)
        for j in range(1, steps + 1):
            work = tmp_path / f"{name}_{j}"
            shutil.copytree(killed, work)
            assert run_in_child(lambda: recover_dataset(work), j)[0]
            recover_dataset(work)
            assert snapshot(work) == want, f"{name}: recovery killed after step {j}"
            shutil.rmtree(work)


def test_check_dataset_completes_a_committed_change(killed_splits, tmp_path):
    committed = tmp_path / "committed"
    shutil.copytree(killed_splits["committed"], committed)
    assert len(list(committed.rglob(f"*{layout.STAGED_SUFFIX}"))) == 4  # no rename done yet
    result = check_dataset(committed, tmp_path / "out")
    assert result["check_pass"] is True
    assert not (committed / JOURNAL_NAME).exists()
    assert not list(committed.rglob("*.tmp"))
    train = json.loads((committed / "annotations" / "instance_train.json").read_text())
    val = json.loads((committed / "annotations" / "instance_val.json").read_text())
    assert (len(train["images"]), len(val["images"])) == (4, 4)


def test_unreadable_journal_is_reported(coco_template):
    (coco_template / JOURNAL_NAME).write_text("{not json")
    with pytest.raises(DatasetError, match=JOURNAL_NAME):
        find_dataset_root(coco_template)


def test_journal_cannot_name_files_outside_the_dataset(coco_template, tmp_path):
    victim = tmp_path / "victim.ppyoloe_sod.tmp"
    victim.write_text("keep me")
    (coco_template / JOURNAL_NAME).write_text(json.dumps(
        {"format": 1, "state": "staging", "moves": [["../victim.ppyoloe_sod.tmp", "annotations/x.json"]]}))
    with pytest.raises(DatasetError, match="cannot be read"):
        recover_dataset(coco_template)
    assert victim.read_text() == "keep me"
