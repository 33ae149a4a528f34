"""ui/models.py: loading checkpoints all together or not at all, going back, describing them."""
from pathlib import Path

import pytest

from conftest import random_model
from nar.checkpoint import CheckpointError, save_transformer
from nar.pipeline import Studio
from ui.models import Models, sources


@pytest.fixture
def models(tiny_checkpoints):
    folder = tiny_checkpoints["vq"].parent
    return Models(Studio.from_pretrained(folder, device="cpu"), folder)


def test_a_load_that_fails_changes_nothing(models, tiny_checkpoints, tmp_path):
    before = dict(models.studio.models)
    save_transformer(tmp_path / "wide.safetensors", random_model("raster", grid=4, vocab=48, classes=2), ["a", "b"])
    with pytest.raises(CheckpointError, match=r"raster model's vocabulary \(48\) does not match the active "
                                              r"tokenizer's codebook \(32\); load its tokenizer together with it"):
        models.load([str(tiny_checkpoints["nar"]), str(tmp_path / "wide.safetensors")])
    assert models.studio.models == before
    with pytest.raises(CheckpointError, match="two nar checkpoints given"):
        models.load([str(tiny_checkpoints["nar"])] * 2)
    assert models.studio.models == before


def test_load_and_reset(models, tiny_checkpoints, tmp_path):
    save_transformer(tmp_path / "five.safetensors", random_model("nar", grid=4, vocab=32, classes=5),
                     list("abcde"))
    message = models.load([str(tmp_path / "five.safetensors")])
    assert message == "Loaded nar model from five.safetensors."
    assert models.studio.models["nar"].class_names == list("abcde")
    assert models.studio.models["nar"].path == tmp_path / "five.safetensors"   # where fine-tuning starts
    assert "tokenizer from" in models.reset() and models.class_names() == ["cat", "dog", "sun"]


def test_sources_are_checked(tmp_path):
    assert sources(["/x/a.pt"], "", "") == [("a.pt", Path("/x/a.pt"))]
    with pytest.raises(ValueError, match="either uploaded files or a Hub repository"):
        sources(["a.pt"], "owner/name", "a.pt")
    with pytest.raises(ValueError, match="at most 3 files"):
        sources(["a", "b", "c", "d"], "", "")
    with pytest.raises(CheckpointError, match="is not a Hub repo id"):
        sources([], "not a repo", "a.pt")
    with pytest.raises(ValueError, match="give the file name"):
        sources([], "owner/name", " , ")


def test_the_table_describes_the_active_models(models):
    headers, rows = models.rows()
    assert headers == ["", "NAR model", "Raster model", "Tokenizer (VQ)"]
    table = {row[0]: row[1:] for row in rows}
    assert table["kind"] == ["nar", "raster", "vq"] and table["grid"] == ["4x4"] * 3
    assert table["classes"][:2] == ["3", "3"] and table["dtype"] == ["float32"] * 3
    assert models.device_label().startswith("cpu (") and models.dtype() == "float32"
