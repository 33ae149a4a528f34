"""nar.text_train and nar.image_tower: batches of distinct emojis, the loss, a tiny end-to-end run."""
from __future__ import annotations

import json

import pytest
import torch

from nar import data, npm_packages
from nar.checkpoint import CheckpointError
from nar.image_tower import ImageTower, ImageTowerConfig, image_embeddings, load_image_tower, save_image_tower
from nar.images import load_text_split
from nar.text_encoder import ByteTokenizer, load_text_encoder
from nar.text_train import CaptionBatches, TextTrainConfig, contrastive_loss, sibling, train_text_encoder, trim
from tests.text_fixture import write_fake_cache


@pytest.fixture(scope="module")
def text_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text_train")
    real_pack = npm_packages.npm_pack
    npm_packages.npm_pack = lambda *a: pytest.fail("tried to download")
    try:
        data.main(["text", "--out", str(tmp / "set"), "--cache", str(write_fake_cache(tmp / "cache")),
                   "--size", "16"])
    finally:
        npm_packages.npm_pack = real_pack
    return tmp / "set"


def test_batches_hold_distinct_emojis_with_their_own_captions(text_set):
    train = load_text_split(text_set, "train")
    batches = CaptionBatches(train, ByteTokenizer(), batch_size=4, seed=0)
    for step in range(5):
        images, ids, mask, prompts = batches(step)
        assert images.shape == (4, 3, 16, 16) and ids.shape == mask.shape and ids.shape[0] == 4
        assert mask[:, -1].all() and mask[:, 0].any()                 # trimmed to the longest prompt
        assert all(len(p.encode()) <= 48 for p in prompts)
    again = batches(3)
    assert again[3] == batches(3)[3] and torch.equal(again[0], batches(3)[0])   # seeded by step
    with pytest.raises(ValueError, match="distinct emojis"):
        CaptionBatches(train, ByteTokenizer(), batch_size=100, seed=0)


def test_trim_keeps_the_longest_prompt():
    ids, mask = ByteTokenizer()(["ab", "abcde"])
    short_ids, short_mask = trim(ids, mask)
    assert short_ids.shape == (2, 5) and short_mask.sum() == 7


def test_contrastive_loss_prefers_matching_pairs():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    scale = torch.tensor(2.0)
    assert contrastive_loss(x, x, scale) < contrastive_loss(x, x.roll(1, 0), scale)


def test_tiny_training_run_writes_loadable_files(text_set, tmp_path):
    out = tmp_path / "te.safetensors"
    cfg = TextTrainConfig(data=str(text_set), out=str(out), steps=3, batch_size=4, warmup=1, eval_every=2,
                          dim=16, n_head=2, embed_dim=8, tower_size=16)
    log = train_text_encoder(cfg)
    assert [e["step"] for e in log["evaluations"]] == [2, 3]
    final = log["evaluations"][-1]
    assert set(final) == {"step", "test", "train"} and 0 <= final["train"]["en"]["top1"] <= 1
    encoder, tokenizer, extra = load_text_encoder(out)
    assert encoder.config.dim == 16 and extra["final"] and extra["steps_done"] == 3
    tower, _ = load_image_tower(sibling(out, "_image_tower.safetensors"))
    assert tower.config.image_size == 16
    assert json.loads(sibling(out, ".json").read_text())["history"][0]["step"] == 1


def test_image_tower_round_trip_and_wrong_kind(tmp_path):
    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig(image_size=16, widths=(8, 16), embed_dim=4)).eval()
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8).numpy()
    path = save_image_tower(tmp_path / "tower.safetensors", tower)
    with torch.no_grad():
        tower.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                               for k, v in tower.state_dict().items()})
    loaded, _ = load_image_tower(path)
    assert torch.allclose(image_embeddings(loaded, images), image_embeddings(tower, images), atol=1e-5)
    with pytest.raises(CheckpointError, match="image_tower checkpoint, not a text encoder"):
        load_text_encoder(path)
