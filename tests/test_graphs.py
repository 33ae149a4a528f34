"""GraphedDecode reuses one set of buffers for every request: it must give what a fresh decode gives."""
import pytest
import torch

from nar.config import SamplingConfig
from nar.decode import generate
from nar.graphs import GraphedDecode
from nar.schedules import make_schedule

CASES = [("nar", "nar", 8, SamplingConfig(cfg_scale=3.0)),
         ("raster", "raster", 8, SamplingConfig(cfg_scale=3.0, cfg_interval=5, top_k=10)),
         ("raster", "zipar", 2, SamplingConfig(cfg_scale=1.0, top_p=0.9))]


def check_replays(model, order, window, sampling, use_graphs):
    schedule = make_schedule(order, 5, window=window)
    graphed = GraphedDecode(model, schedule, batch=2, sampling=sampling, use_graphs=use_graphs)
    for classes, seed in (([1, 2], 0), ([3, 0], 17), ([1, 2], 0)):
        ids = torch.tensor(classes)
        expected = generate(model, schedule, ids, SamplingConfig(**{**sampling.__dict__, "seed": seed}))
        assert torch.equal(graphed(ids, seed).cpu(), expected.cpu())
    decoded = 0  # streaming a replay: undecoded positions read -1, as in a fresh decode
    for record in graphed.steps(torch.tensor([0, 1]), seed=3):
        decoded += record.positions.numel()
        assert int((record.grid.cpu() >= 0).sum()) == 2 * decoded


@pytest.mark.parametrize("kind,order,window,sampling", CASES)
def test_reused_buffers_match_fresh_decodes(make_model, kind, order, window, sampling):
    check_replays(make_model(kind, grid=5), order, window, sampling, use_graphs=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("kind,order,window,sampling", CASES)
def test_cuda_graph_replays_match_fresh_decodes(make_model, kind, order, window, sampling):
    check_replays(make_model(kind, grid=5).cuda(), order, window, sampling, use_graphs=True)


def test_wrong_batch_and_bad_seed_are_refused(make_model):
    graphed = GraphedDecode(make_model("nar", grid=4), make_schedule("nar", 4), 2, SamplingConfig(), use_graphs=False)
    with pytest.raises(ValueError, match="batch of 2"):
        graphed(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="seed"):
        graphed(torch.tensor([0, 1]), seed=-1)
    with pytest.raises(ValueError, match="class ids"):
        graphed(torch.tensor([0, 99]))


def test_an_oom_inside_capture_releases_the_half_built_decode_before_raising(make_model, monkeypatch):
    """Simulated on the CPU: torch.cuda.graph's exit calls capture_end(), which can raise its own
    error while the OOM is handled; the caller must get a CaptureError marked out_of_memory, and
    the half-built buffers must already be gone while that error is still alive."""
    import weakref
    import nar.graphs as graphs
    held = []

    def capture_runs_out_of_memory(self):
        self.graphs.append(object())
        self.tokens.append(torch.zeros(100))
        held.extend([weakref.ref(self.tokens[0]), weakref.ref(self.state.caches[0].k)])
        try:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        finally:
            raise RuntimeError("CUDA error: capture invalidated")

    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs.GraphedDecode, "_capture", capture_runs_out_of_memory)
    with pytest.raises(graphs.CaptureError, match="capture invalidated") as failed:
        GraphedDecode(make_model("nar", grid=4), make_schedule("nar", 4), 2, SamplingConfig())
    assert failed.value.out_of_memory and graphs.is_out_of_memory(failed.value)
    assert held and all(ref() is None for ref in held)


def test_out_of_memory_is_recognised_through_the_error_chain():
    from nar.graphs import is_out_of_memory
    try:
        try:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        except RuntimeError:
            raise RuntimeError("capture_end failed")
    except RuntimeError as chained:
        assert is_out_of_memory(chained)
    assert not is_out_of_memory(RuntimeError("CUDA error: illegal memory access"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_out_of_memory_while_building_frees_everything(make_model):
    """With the GPU almost full, build ever larger decodes until one does not fit (in the KV
    cache or inside the graph capture): each attempt, built or failed, must give back all it took."""
    import gc
    from nar.graphs import CaptureError
    model = make_model("nar", grid=5).cuda()
    schedule, sampling = make_schedule("nar", 5), SamplingConfig(cfg_scale=3.0)
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    for _ in range(2):   # the plan's tensors (cached per device) and cuBLAS workspaces stay allocated
        GraphedDecode(model, schedule, 1, sampling).release()
    torch.cuda.empty_cache()
    filler = torch.empty(torch.cuda.mem_get_info()[0] - (256 << 20), dtype=torch.uint8, device="cuda")
    base = torch.cuda.memory_allocated()
    slack = 64 << 20     # a new side stream's cuBLAS workspace may stay; a kept decode would be far more
    failed, batch = None, 64
    while failed is None and batch < (1 << 24):
        try:
            GraphedDecode(model, schedule, batch, sampling).release()
        except (CaptureError, torch.cuda.OutOfMemoryError) as e:
            failed = f"batch {batch}: {type(e).__name__}"
        gc.collect()
        torch.cuda.empty_cache()
        assert torch.cuda.memory_allocated() - base <= slack, (batch, failed)
        batch *= 2
    del filler
    assert failed is not None
    print(failed)
