"""nar/pipeline.py: Studio.from_pretrained, its one-call API, and model swaps checked against the
tokenizer."""
import numpy as np
import pytest
import torch

from conftest import random_model
from nar.checkpoint import CheckpointError
from nar.config import SamplingConfig
from nar.decode import generate
from nar.loading import LoadedModel, load
from nar.pipeline import Studio
from nar.schedules import make_schedule


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def studio(tiny_checkpoints):
    return Studio.from_pretrained(tiny_checkpoints["vq"].parent, device="cpu")


def test_from_pretrained_loads_the_three_models_of_a_folder(studio, tiny_checkpoints):
    assert studio.models["nar"].class_names == ["cat", "dog", "sun"]
    assert studio.models["raster"].model.config.kind == "raster"
    assert studio.device.type == "cpu" and studio.dtype == torch.float32
    assert studio.models["nar"].path == tiny_checkpoints["nar"]
    with pytest.raises(FileNotFoundError, match="checkpoints missing"):
        Studio.from_pretrained(tiny_checkpoints["vq"].parent / "nowhere", device="cpu")


@pytest.mark.parametrize("order,steps", [("nar", 7), ("raster", 16), ("zipar", 10)])
def test_one_call_gives_images_tokens_and_timings(studio, order, steps):
    seen = []
    out = studio(["dog", "sun"], order=order, sampling=SamplingConfig(seed=5), window=2, callback=seen.append)
    assert [r.step for r in seen] == list(range(steps)) and out.steps == steps
    assert out.images.shape == (2, 16, 16, 3) and out.images.dtype == np.uint8
    assert out.tokens.shape == (2, 4, 4) and (out.tokens >= 0).all()
    assert out.seconds == out.step_seconds[-1] > 0 and out.step_seconds == sorted(out.step_seconds)
    # the same tokens as the engine run directly, and the images are their decoding
    model = studio.model_for(order).model
    direct = generate(model, make_schedule(order, 4, 2), torch.tensor([1, 2]), SamplingConfig(seed=5))
    assert torch.equal(out.tokens, direct)
    assert np.array_equal(out.images, studio.images(direct))


def test_bad_classes_and_sampling_are_refused(studio):
    with pytest.raises(ValueError, match="unknown class 'moon'; the model knows cat, dog, sun"):
        studio(["moon"])
    with pytest.raises(ValueError, match="class id 9 is out of range"):
        studio([9])
    with pytest.raises(ValueError, match="top_p"):
        studio(["cat"], sampling=SamplingConfig(top_p=0.0))


def test_a_model_that_does_not_fit_the_tokenizer_is_refused(tiny_checkpoints):
    studio = Studio.from_pretrained(tiny_checkpoints["vq"].parent, device="cpu")
    before = studio.models["nar"]
    wide = LoadedModel(random_model("nar", grid=4, vocab=48, classes=2), ["a", "b"], "wide")
    with pytest.raises(CheckpointError, match=r"vocabulary \(48\) does not match the active tokenizer's codebook"):
        studio.swap(wide)
    big = LoadedModel(random_model("nar", grid=5, vocab=32, classes=2), ["a", "b"], "big")
    with pytest.raises(CheckpointError, match="5x5 grid does not match"):
        studio.swap(big)
    assert studio.models["nar"] is before


def test_swap_tokenizer_unloads_what_no_longer_fits(tiny_checkpoints):
    studio = Studio.from_pretrained(tiny_checkpoints["vq"].parent, device="cpu")
    vq = load(tiny_checkpoints["vq"], expect="vq", device=torch.device("cpu"))
    vq.cfg.codebook_size = 48                        # stands in for a tokenizer with another codebook
    wide = LoadedModel(random_model("nar", grid=4, vocab=48, classes=2), ["a", "b"], "wide")
    assert studio.swap_tokenizer(vq, [wide]) == ["raster"]
    assert studio.models["nar"] is wide and studio.models["raster"] is None and studio.vq is vq
    with pytest.raises(ValueError, match="no raster model is loaded"):
        studio(["a"], order="raster")
