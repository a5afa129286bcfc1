import math

import pytest
import torch

import cosas_tutorial.train as train_module
from cosas_tutorial.config import PROFILES, get_profile
from cosas_tutorial.data.cosas import discover
from cosas_tutorial.data.tiles import TileCache
from cosas_tutorial.env import seed_everything
from cosas_tutorial.model import build_model
from cosas_tutorial.train import TrainStep, cyclic_cosine, fit

CPU = torch.device("cpu")


def test_cyclic_cosine_anneals_to_zero_each_cycle():
    factor = cyclic_cosine(total_steps=100, cycles=2)
    assert factor(0) == 1.0 and factor(50) == 1.0
    assert factor(49) < 0.01 and factor(99) < 0.01
    assert factor(25) == pytest.approx(0.5)
    assert all(factor(s) >= factor(s + 1) for s in range(49))


def _fresh(tiny_synthetic):
    seed_everything(0)
    config = get_profile("ci", epochs=2, steps_per_epoch=2)
    samples = [s for s in discover(tiny_synthetic) if s.task == "task1" and s.split == "train"]
    return build_model(config.encoder), TileCache(samples), config


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_synthetic, tmp_path, monkeypatch):
    model, tiles, config = _fresh(tiny_synthetic)
    history = fit(model, tiles, config, CPU, tmp_path / "a.ckpt", progress=False)
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in history) and history[-1]["amp"] == "fp32"
    # the rate of each epoch's last step (4 steps, one cosine cycle): annealed, not restarted
    factor = cyclic_cosine(total_steps=4, cycles=1)
    assert [h["lr_end"] for h in history] == pytest.approx(
        [config.lr * factor(1), config.lr * factor(3)]
    )

    model_b, tiles_b, _ = _fresh(tiny_synthetic)
    real_sample_batch, calls = train_module.sample_batch, []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) > config.steps_per_epoch:
            raise KeyboardInterrupt
        return real_sample_batch(*args, **kwargs)

    monkeypatch.setattr(train_module, "sample_batch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(model_b, tiles_b, config, CPU, tmp_path / "b.ckpt", progress=False)
    monkeypatch.setattr(train_module, "sample_batch", real_sample_batch)
    assert torch.load(tmp_path / "b.ckpt", weights_only=False)["epoch"] == 1

    model_c, tiles_c, _ = _fresh(tiny_synthetic)  # a new process would start from scratch
    resumed = fit(model_c, tiles_c, config, CPU, tmp_path / "b.ckpt", resume=True, progress=False)
    assert [h["loss"] for h in resumed] == [h["loss"] for h in history]
    for (name, a), b in zip(model.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(a, b), name


def test_fp16_trains_with_a_gradient_scaler_saved_in_the_checkpoint(
    tiny_synthetic, tmp_path, monkeypatch, recwarn
):
    """The path of GPUs without bf16 (e.g. a T4), run on the CPU: fp16 autocast, a gradient
    scaler and the fused Adam that skips overflowed steps."""
    monkeypatch.setattr(train_module, "autocast_dtype", lambda device: torch.float16)
    model, tiles, config = _fresh(tiny_synthetic)
    history = fit(model, tiles, config, CPU, tmp_path / "fp16.ckpt", progress=False)
    assert [h["amp"] for h in history] == ["float16", "float16"]
    assert all(math.isfinite(h["loss"]) for h in history)
    scaler = torch.load(tmp_path / "fp16.ckpt", weights_only=False)["scaler"]
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0  # enabled (else empty)
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_training_step_on_the_gpu_never_waits_for_it(dtype, monkeypatch):
    monkeypatch.setattr(train_module, "autocast_dtype", lambda device: dtype)
    device = torch.device("cuda")
    config = get_profile("ci", crop_size=64, batch_size=4)
    step = TrainStep(build_model(config.encoder), config, device, total_steps=8)
    images = torch.rand(4, 3, 64, 64, device=device)
    masks = (torch.rand(4, 1, 64, 64, device=device) > 0.5).float()
    step(images, masks)  # first-call allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host-device synchronisation raises
    try:
        losses = [step(images, masks) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.precision == str(dtype).removeprefix("torch.")
    assert all(torch.isfinite(loss) for loss in losses)


def test_training_lowers_the_loss(tiny_synthetic):
    model, tiles, config = _fresh(tiny_synthetic)
    config = config.replace(epochs=3, steps_per_epoch=6, lr=1e-3)
    history = fit(model, tiles, config, CPU, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_synthetic_tiles_hold_a_crop(name):
    """A synthetic tile, rescaled by the profile's tile_scale, must hold a training crop: a
    tile much smaller than the crop trains mostly on padding."""
    config = PROFILES[name]
    assert config.synthetic_size * config.tile_scale >= 0.9 * config.crop_size, name
