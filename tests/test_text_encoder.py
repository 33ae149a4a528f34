"""nar.text_encoder: the byte tokenizer's rules, the encoder's masking, save / load."""
from __future__ import annotations

import pytest
import torch

from nar.checkpoint import CheckpointError, save_checkpoint
from nar.text_encoder import ByteTokenizer, TextEncoder, TextEncoderConfig, encode_prompts, \
    load_text_encoder, save_text_encoder

TOK = ByteTokenizer()


def test_left_padding_bytes_and_mask():
    ids, mask = TOK(["cat", "grinning face"])
    assert ids.shape == mask.shape == (2, 48) and ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ids[0, -3:].tolist() == list(b"cat") and (ids[0, :-3] == TOK.pad_id).all()
    assert mask[0].tolist() == [False] * 45 + [True] * 3
    assert mask[1].sum() == len("grinning face")
    assert TOK.decode(ids[1]) == "grinning face"


def test_nfc_normalisation_and_multibyte_text():
    decomposed = "cafe\u0301"                 # e + combining acute
    ids, mask = TOK([decomposed, "café", "猫の顔", "🇯🇵"])
    assert torch.equal(ids[0], ids[1])       # NFC: the same bytes
    assert mask[2].sum() == 9 and mask[3].sum() == 8
    assert TOK.decode(ids[2]) == "猫の顔"


@pytest.mark.parametrize("prompt, message", [
    ("", "empty"), ("   \u3000", "empty"), ("a\nb", "control characters"), ("x\x00", "U\\+0000"),
    ("a" * 49, "49 bytes in UTF-8; the limit is 48 bytes"), ("猫" * 17, "16 Chinese"),
    (b"cat", "must be text"), (None, "must be text"), (3, "not int"),
])
def test_bad_prompts_are_refused_clearly(prompt, message):
    with pytest.raises(ValueError, match=message):
        TOK([prompt])


def test_exactly_48_bytes_and_a_single_string():
    ids, mask = TOK("a" * 48)
    assert ids.shape == (1, 48) and mask.all()
    with pytest.raises(ValueError, match="at least one"):
        TOK([])


def test_truncate_cuts_at_a_character_boundary():
    assert TOK.truncate("short") == "short"
    cut = TOK.truncate("猫" * 20)                     # 60 bytes -> 16 characters, 48 bytes
    assert cut == "猫" * 16
    cut = TOK.truncate("a" * 46 + "é" + "é")         # 46 + 2 = 48 fits, the second é does not
    assert cut == "a" * 46 + "é"
    cut = TOK.truncate("a" * 47 + "猫")               # a 3-byte character that would straddle the limit
    assert cut == "a" * 47
    for text in ("people holding hands: light skin tone, medium skin tone", "флаг: Российская Федерация",
                 "a\tb " * 20):
        out = TOK.truncate(text)
        assert len(out.encode()) <= 48 and TOK([out])[1].any()


def _encoder(seed=0, **kw):
    torch.manual_seed(seed)
    return TextEncoder(TextEncoderConfig(dim=32, n_layer=2, n_head=4, embed_dim=16, **kw)).eval()


def test_padding_rows_are_zero_and_padding_does_not_leak():
    enc = _encoder()
    ids, mask = TOK(["cat", "a much longer prompt here"])
    feats = enc(ids, mask)
    assert feats.shape == (2, 48, 32)
    assert (feats[~mask] == 0).all() and (feats[mask].abs().sum(-1) > 0).all()
    # the pad ids' values and a shorter padded length change nothing (positions count from the end)
    other = ids.clone()
    other[~mask] = 7
    assert torch.allclose(enc(other, mask), feats, atol=1e-6)
    alone, alone_mask = ids[:1, -3:], mask[:1, -3:]
    assert torch.allclose(enc(alone, alone_mask), feats[:1, -3:], atol=1e-5)
    pooled = enc.embed(ids, mask)
    assert pooled.shape == (2, 16) and torch.isfinite(pooled).all()


def test_bidirectional_attention():
    enc = _encoder()
    a, ma = TOK(["cat face"])
    b, mb = TOK(["bat face"])
    fa, fb = enc(a, ma), enc(b, mb)
    # changing the first byte changes the features of the last one: later tokens see earlier ones
    # and, bidirectionally, earlier ones see later ones
    assert not torch.allclose(fa[0, -1], fb[0, -1])
    c, mc = TOK(["cat fact"])
    assert not torch.allclose(fa[0, -8], enc(c, mc)[0, -8])


def test_encoder_refuses_bad_shapes_and_empty_rows():
    enc = _encoder()
    ids, mask = TOK(["cat"])
    with pytest.raises(ValueError, match="valid token"):
        enc(ids, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="must both be"):
        enc(ids, mask[:, :10])


def test_save_and_load_round_trip_in_fp16(tmp_path):
    enc = _encoder(seed=3)
    path = save_text_encoder(tmp_path / "t.safetensors", enc, {"note": "x"})
    loaded, tok, extra = load_text_encoder(path)
    assert loaded.config == enc.config and tok.max_len == 48 and extra == {"note": "x"}
    with torch.no_grad():
        enc.load_state_dict({k: v.half().float() for k, v in enc.state_dict().items()})
    feats, mask = encode_prompts(loaded, tok, ["grinning face", "猫"])
    ref, _ = encode_prompts(enc, TOK, ["grinning face", "猫"])
    assert torch.allclose(feats, ref, atol=1e-5) and not feats.requires_grad


def test_wrong_files_give_clear_messages(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_text_encoder(tmp_path / "junk.safetensors")
    save_checkpoint(tmp_path / "judge.safetensors", "classifier", {"w": torch.zeros(2)}, {"num_classes": 2})
    with pytest.raises(CheckpointError, match="classifier checkpoint, not a text encoder"):
        load_text_encoder(tmp_path / "judge.safetensors")
    save_checkpoint(tmp_path / "huge.safetensors", "text_encoder", {"w": torch.zeros(2)},
                    {**TextEncoderConfig().to_dict(), "dim": 10 ** 7})
    with pytest.raises(CheckpointError, match="dim=10000000"):
        load_text_encoder(tmp_path / "huge.safetensors")
    save_checkpoint(tmp_path / "other.safetensors", "text_encoder", {"w": torch.zeros(2)},
                    TextEncoderConfig(dim=32, n_head=4).to_dict())
    with pytest.raises(CheckpointError, match="does not match its model"):
        load_text_encoder(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_text_encoder(tmp_path / "missing.safetensors")
