"""nar/model.py: the training masks, the class embedding's null row, the heads and causality of the
teacher-forced forward (the cached decoder is checked against it in test_decode.py)."""
import torch

from nar.conditions import ClassCondition

from nar.model import may_attend, plane_index


def test_raster_mask_is_causal_and_nar_attends_by_distance():
    n = 3
    raster = may_attend("raster", (1, n, n))
    assert torch.equal(raster, torch.ones(10, 10, dtype=torch.bool).tril())
    nar = may_attend("nar", (1, n, n))
    dist = plane_index((1, n, n))   # images: the plane is the anti-diagonal h + w
    assert dist.tolist() == [0, 1, 2, 1, 2, 3, 2, 3, 4]
    assert nar[:, 0].all()                                     # everyone sees the class token
    for q in range(9):
        for k in range(9):
            assert bool(nar[1 + q, 1 + k]) == bool(dist[k] <= dist[q])


def test_class_embedding_has_a_null_row_last(make_model):
    model = make_model("nar", grid=4, classes=5)
    table = model.cls_embedding.embedding_table.weight
    assert table.shape[0] == 5 + 1
    null, _ = model.embed_condition(ClassCondition(torch.tensor([5])))
    assert torch.equal(null[0, 0], table[-1])


def test_nar_model_has_the_below_head_and_raster_does_not(make_model):
    nar, raster = make_model("nar", grid=4), make_model("raster", grid=4)
    assert nar.has_below_head and not raster.has_below_head
    assert len(nar.layers) == nar.config.n_layer + nar.config.extra_blocks
    assert len(raster.layers) == raster.config.n_layer


def test_forward_shapes_and_loss(make_model):
    for kind in ("nar", "raster"):
        model = make_model(kind, grid=4, vocab=48)
        tokens = torch.randint(0, 48, (2, 16))
        logits, loss = model(torch.tensor([0, 1]), tokens, targets=tokens)
        assert logits.shape == (2, 16, 48) and loss.ndim == 0 and torch.isfinite(loss)


def test_a_prediction_never_sees_its_own_or_a_later_token(make_model):
    """Changing token p changes no logits row that predicts p or anything decoded before p."""
    torch.manual_seed(0)
    for kind in ("nar", "raster"):
        model = make_model(kind, grid=4, vocab=48)
        tokens = torch.randint(0, 48, (1, 16))
        base, _ = model(torch.tensor([1]), tokens)
        p = 6                                                  # grid (1, 2), distance 3
        changed = tokens.clone()
        changed[0, p] = (changed[0, p] + 1) % 48
        other, _ = model(torch.tensor([1]), changed)
        differs = (base - other).abs().amax(-1)[0] > 1e-5
        if kind == "raster":
            unaffected = torch.arange(16) <= p
        else:  # a NAR row at distance d is predicted from tokens at distance < d
            unaffected = plane_index((1, 4, 4)) <= plane_index((1, 4, 4))[p]
        assert not differs[unaffected].any(), (kind, differs)
        assert differs[~unaffected].any(), kind                # and it is used after that


def pairwise_rope(x, rope):
    """RoPE as first written: every pair (x0, x1) rotated by its (cos, sin), in fp32."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    r = rope.view(1, xs.shape[1], 1, xs.shape[3], 2)
    out = torch.stack([xs[..., 0] * r[..., 0] - xs[..., 1] * r[..., 1],
                       xs[..., 1] * r[..., 0] + xs[..., 0] * r[..., 1]], dim=-1)
    return out.flatten(3).type_as(x)


def test_fast_rope_and_rms_norm_are_bit_for_bit_the_written_out_formulas():
    import pytest
    from nar.model import RMSNorm, apply_rope, rope_factors, rope_table
    torch.manual_seed(0)
    table = rope_table((1, 4, 4), head_dim=16)[torch.tensor([0, 3, 7, 16, 5])]   # the class row too
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = (torch.randn(3, 5, 6, 16) * 4).to(dtype)
        rope = table.to(dtype)
        expected = pairwise_rope(x, rope)
        assert torch.equal(apply_rope(x, rope), expected)
        assert torch.equal(apply_rope(x, rope_factors(rope)), expected)
    norm = RMSNorm(64, eps=1e-5)
    torch.nn.init.normal_(norm.weight)
    for shape in [(2, 1, 64), (2, 16, 64), (5, 33, 64)]:
        x = torch.randn(shape) * 3
        written = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
        assert torch.equal(norm(x), written)
    with pytest.raises(AssertionError):   # the comparison can fail: another eps is another result
        assert torch.equal(RMSNorm(64, eps=1e-2)(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
