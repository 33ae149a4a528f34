"""ui/requests.py: a request is parsed and checked once, names every problem, and is frozen."""
import dataclasses

import pytest

from nar.config import SamplingConfig
from nar.pipeline import Studio
from ui.requests import frame_seconds, parse_grid, parse_measure, parse_options, parse_request


@pytest.fixture(scope="module")
def studio(tiny_checkpoints):
    return Studio.from_pretrained(tiny_checkpoints["vq"].parent, device="cpu")


def test_a_request_holds_a_checked_sampling_config(studio):
    request = parse_request(studio, ["zipar", "nar"], class_name="sun", num_images="2", window=3.0, cfg_scale="2.5",
                            temperature=0.5, top_k=10, top_p=0.9, seed=7)
    assert request.sampling == SamplingConfig(cfg_scale=2.5, cfg_interval=-1, temperature=0.5, top_k=10, top_p=0.9,
                                              seed=7)
    assert (request.order, request.num_images, request.window) == ("zipar", 2, 3)
    assert {o: c.class_ids.tolist() for o, c in request.conditions.items()} == {"zipar": [2, 2], "nar": [2, 2]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.num_images = 3


def test_every_problem_is_named_once(studio):
    with pytest.raises(ValueError) as info:
        parse_request(studio, ["zipar"], class_name="moon", num_images=0, window=9, temperature="hot", seed=1.5)
    text = str(info.value)
    for part in ("number of images must be in [1, 16]", "ZipAR window must be in [1, 4] for a 4x4 grid",
                 "temperature must be a number", "seed must be a whole number", "unknown class 'moon'"):
        assert text.count(part) == 1, (part, text)
    with pytest.raises(ValueError, match="cfg_interval must be -1"):     # the range is SamplingConfig's
        parse_request(studio, ["nar"], class_name="cat", cfg_interval=-5)
    with pytest.raises(ValueError, match="pick a class"):
        parse_request(studio, ["nar"], class_name=" ")
    with pytest.raises(ValueError, match="unknown order 'spiral'"):
        parse_request(studio, ["spiral"], class_name="cat")
    with pytest.raises(ValueError, match="class names are at most 200 characters"):
        parse_request(studio, ["nar"], class_name="x" * 5000)


def test_the_other_inputs():
    assert frame_seconds(None) == 0.0 and frame_seconds("0.5") == 0.5
    with pytest.raises(ValueError, match=r"seconds per frame must be in \[0, 2.0\]"):
        frame_seconds(3)
    m = parse_measure([4, "1", 4], 2, 2, grid_size=4)
    assert (m.batches, m.window, m.rounds) == ((1, 4), 2, 2)
    with pytest.raises(ValueError, match="batch sizes must be in"):
        parse_measure([65], 2, 2, grid_size=4)
    with pytest.raises(ValueError, match="pick at least one batch size"):
        parse_measure([], 2, 2, grid_size=4)
    assert parse_grid(None, 16) == 16 and parse_grid("24", 16) == 24
    with pytest.raises(ValueError, match="token grid must be in"):
        parse_grid(100, 16)


def test_fine_tuning_options_use_the_library_ranges():
    options = parse_options("100", 1e-3, 8, "last:2", 10, blocks=3)
    assert (options.steps, options.batch_size, options.train_layers) == (100, 8, "last:2")
    with pytest.raises(ValueError, match=r"steps must be in \[1, 5000\].*learning rate must be in \[1e-6, 1e-2\]"):
        parse_options(0, 1.0, 8, "all", 10)
    with pytest.raises(ValueError, match="the model has 3 blocks"):
        parse_options(10, 1e-3, 8, "last:5", 10, blocks=3)
    with pytest.raises(ValueError, match="preview interval must be a number, got 'often'"):
        parse_options(10, 1e-3, 8, "all", "often")
    with pytest.raises(ValueError, match="batch size must be a whole number"):
        parse_options(10, 1e-3, 8.5, "all", 10)
