"""Sharing one machine between parallel jobs, and rank roles (no GPU needed)."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from ptexp.distributed import assign_gpu, is_main_process, share_machine


def test_jobs_launched_together_get_distinct_gpus() -> None:
    visible = ["0", "1", "2", "3"]
    batch = [assign_gpu(num, n_jobs=4, visible=visible) for num in range(8, 12)]
    assert sorted(batch) == visible
    assert assign_gpu(5, n_jobs=8, visible=["0", "1"]) == "1"  # more jobs than GPUs: round-robin
    assert assign_gpu(3, n_jobs=1, visible=visible) is None  # sequential launcher: leave as is
    assert assign_gpu(3, n_jobs=4, visible=[]) is None  # CPU machine


def test_parallel_launcher_splits_cores_and_gpus(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    hc = OmegaConf.create({"launcher": {"n_jobs": 2}, "job": {"num": 3}})
    assert share_machine(hc) == max(1, len(os.sched_getaffinity(0)) // 2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_basic_launcher_leaves_the_machine_alone(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert share_machine(OmegaConf.create({"launcher": {}, "job": {"num": 0}})) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5"


def test_rank_zero_is_the_writer(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


def test_a_signal_on_an_epochs_last_step_leaves_the_save_to_the_epoch_end() -> None:
    """Saving on the last step of an epoch would skip that epoch's evaluation (whose data loader
    draws from the RNG): the resumed run would then train on another random stream."""
    from types import SimpleNamespace

    from ptexp.trainer import CheckpointOnSignal

    callback = CheckpointOnSignal()
    callback.received = True
    for epoch, expected in ((2.0, False), (2.5, True)):
        control = SimpleNamespace(should_save=False)
        callback.on_step_end(None, SimpleNamespace(epoch=epoch), control)
        assert control.should_save is expected, epoch
