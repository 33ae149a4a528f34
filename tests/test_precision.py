"""What holds in which precision: the batch/seed guarantee (fp32) and the fp32 heads of a bf16 model."""
import copy

import pytest
import torch
import torch.nn.functional as F

from nar.config import SamplingConfig
from nar.decode import generate
from nar.loading import BUNDLED_DIR, load
from nar.schedules import make_schedule


@pytest.mark.parametrize("order,kind", [("nar", "nar")])   # raster and zipar: tests/test_decode.py (random models)
def test_image_i_of_a_batch_seeded_s_is_the_single_image_seeded_s_plus_i_in_fp32(order, kind):
    """The guarantee the README states, on a bundled model in fp32 on the CPU. In bf16 it does
    not hold (kernels round differently with the row count: 41 of 256 tokens, batch of 4 vs 1)."""
    model = load(BUNDLED_DIR / f"{kind}.safetensors", expect=kind, device=torch.device("cpu"),
                 dtype=torch.float32).model
    schedule = make_schedule(order, model.config.grid_size, 8)
    sampling = SamplingConfig(cfg_scale=4.0, top_k=2000, seed=5)
    batch = generate(model, schedule, torch.tensor([3, 1]), sampling)
    single = generate(model, schedule, torch.tensor([1]), SamplingConfig(cfg_scale=4.0, top_k=2000, seed=6))
    assert torch.equal(batch[1], single[0])


def test_a_bf16_model_gives_unrounded_fp32_logits(make_model):
    """The heads' product of bf16 weights and bf16 inputs is kept in fp32 (CFG amplifies any
    rounding of the logits); in fp32 nothing changes."""
    model = make_model("nar", grid=4)
    h = torch.randn(2, 3, model.config.dim)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    for logits, norm, proj in ((bf16.logits_right, bf16.norm, bf16.output),
                               (bf16.logits_below, bf16.medusa_norm, bf16.medusa_output)):
        x = norm(h.bfloat16())
        exact = F.linear(x.float(), proj.weight.float())
        got = logits(h.bfloat16())
        assert got.dtype == torch.float32 and torch.equal(got, exact)
        assert not torch.equal(proj(x).float(), exact)   # what a bf16 matmul returns: rounded
    assert torch.equal(model.logits_right(h), model.output(model.norm(h)))
    with torch.autocast("cpu", dtype=torch.bfloat16):   # training under autocast still gets fp32
        assert model.logits_right(h).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_heads_match_the_upcast_product(make_model):
    from nar.model import _fp32_out_matmul
    model = make_model("nar", grid=4).cuda().to(torch.bfloat16)
    h = torch.randn(4, 3, model.config.dim, device="cuda").bfloat16()
    with torch.inference_mode():
        got = model.logits_right(h)
        exact = F.linear(model.norm(h).float(), model.output.weight.float())
    assert _fp32_out_matmul(torch.device("cuda", torch.cuda.current_device()))   # the bf16 -> fp32 kernel is there
    assert got.dtype == torch.float32
    assert torch.allclose(got, exact, rtol=1e-4, atol=1e-4)    # fp32 accumulation, only the order differs
