"""The one engine on T x n x n video grids: cached decode vs the slow reference, the 3-D head rule
against the official code, the 3-D mask, schedules and RoPE along time."""
import pytest
import torch

from nar.conditions import ClassCondition

import nar.decode as decode
from nar.config import SamplingConfig
from nar.decode import compile_plan, decode_steps, predictors
from nar.model import may_attend, plane_index, rope_table
from nar.schedules import make_schedule, nar, raster, zipar
from reference import reference_step_logits

ATOL, RTOL = 2e-4, 2e-4
T, N = 3, 3          # 3 frames of 3 x 3 tokens: edges, faces and an interior in every direction

VIDEO_CASES = [("nar", "nar", 0), ("raster", "raster", 0), ("raster", "zipar", 2)]


def decode_records(model, schedule, sampling, classes=(1, 3)):
    return [(r.positions.clone(), r.logits.clone(), r.grid.clone())
            for r in decode_steps(model, schedule, torch.tensor(classes), sampling, record_logits=True)]


def max_gap(model, schedule, sampling, classes=(1, 3)) -> float:
    """Largest |cached - reference| over every step's logits."""
    records = decode_records(model, schedule, sampling, classes)
    final = records[-1][2]
    assert (final >= 0).all()
    ref = reference_step_logits(model, schedule, torch.tensor(classes), final, sampling.cfg_scale,
                                sampling.cfg_interval)
    assert len(ref) == len(records) == len(schedule)
    return max(float((logits - r).abs().max()) for (_, logits, _), r in zip(records, ref))


@pytest.mark.parametrize("kind,order,window", VIDEO_CASES)
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_video_decode_matches_slow_reference(make_model, kind, order, window, cfg_scale):
    model = make_model(kind, grid=N, frames=T)
    schedule = make_schedule(order, N, window=window, frames=T)
    sampling = SamplingConfig(cfg_scale=cfg_scale, top_k=0, seed=7)
    records = decode_records(model, schedule, sampling)
    ref = reference_step_logits(model, schedule, torch.tensor([1, 3]), records[-1][2], cfg_scale)
    for t, ((positions, logits, _), r) in enumerate(zip(records, ref)):
        assert positions.tolist() == list(schedule.steps[t])
        torch.testing.assert_close(logits, r, atol=ATOL, rtol=RTOL, msg=f"step {t}")


@pytest.mark.parametrize("kind,order", [("nar", "nar"), ("raster", "raster")])
def test_video_decode_matches_one_training_forward(make_model, kind, order):
    """With its own order, every step equals the full forward with the 3-D training mask."""
    model = make_model(kind, grid=N, frames=T)
    records = decode_records(model, make_schedule(order, N, frames=T), SamplingConfig(cfg_scale=1.0, top_k=0))
    with torch.no_grad():
        full, _ = model(torch.tensor([1, 3]), records[-1][2])
    for positions, logits, _ in records:
        torch.testing.assert_close(logits, full[:, positions], atol=ATOL, rtol=RTOL)


def wrong_frame_head(kind, shape, p, L=1):   # the t neighbour read through the below head
    return [(q, "below" if head == "frame" else head) for q, head in predictors(kind, shape, p, L)]


def no_frame_term(kind, shape, p, L=1):      # the t neighbour left out of the mean
    return [pair for pair in predictors(kind, shape, p, L) if pair[1] != "frame" or p == 0] or predictors(kind, shape, p, L)


def ignore_time_mask(kind, shape, L=1):      # proximity by h + w only: later frames leak in
    return may_attend(kind, (1, shape[1], shape[2] * shape[0]), L)


def strict_plane_mask(kind, shape, L=1):     # a token sees earlier planes only, not its own
    allowed = may_attend(kind, shape, L)
    plane = torch.cat([torch.tensor([-1]), plane_index(shape)])
    own_plane = (plane[:, None] == plane[None, :]) & ~torch.eye(len(plane), dtype=torch.bool)
    return allowed & ~own_plane


@pytest.mark.parametrize("mutation", ["wrong_frame_head", "no_frame_term", "ignore_time_mask", "strict_plane_mask"])
def test_a_wrong_head_rule_or_mask_fails_the_check(make_model, monkeypatch, mutation):
    """The comparison above can fail: each deliberately wrong engine is caught."""
    model = make_model("nar", grid=N, frames=T)
    schedule = make_schedule("nar", N, frames=T)
    sampling = SamplingConfig(cfg_scale=1.0, top_k=0, seed=7)
    assert max_gap(model, schedule, sampling) < ATOL       # the right engine passes
    target = "predictors" if "head" in mutation or "term" in mutation else "may_attend"
    monkeypatch.setattr(decode, target, globals()[mutation])
    decode.compile_plan.cache_clear()
    decode.plan_on.cache_clear()
    try:
        assert max_gap(model, schedule, sampling) > 1e-2
    finally:
        decode.compile_plan.cache_clear()
        decode.plan_on.cache_clear()


# -- the head rule against a transcription of the official NAR-videos code ----------------------
def official_decode_rule(shape, coordinate, next_coordinate):
    """models/larp_ar.py `forward`, decode branch: which fed token's head scores which target.
    Heads there: R (right, w), D (down, h; the block after the backbone), B (back, t; the last
    block). Returns, per next coordinate, the sorted (fed index, head) pairs averaged."""
    T_, H, W = shape
    score = {}
    for i, co in enumerate(coordinate):
        t, h, w = co[0], co[1], co[2] + 1
        if w < W:
            score.setdefault(t * (H * W) + h * W + w, []).append((i, "right"))
        t, h, w = co[0] + 1, co[1], co[2]
        if t < T_:
            score.setdefault(t * (H * W) + h * W + w, []).append((i, "frame"))
        t, h, w = co[0], co[1] + 1, co[2]
        if h < H:
            score.setdefault(t * (H * W) + h * W + w, []).append((i, "below"))
    return [sorted(score[t * (H * W) + h * W + w]) for t, h, w in next_coordinate]


@pytest.mark.parametrize("shape", [(3, 3, 3), (4, 4, 4), (2, 5, 5)])
def test_head_rule_matches_official_decode_on_edges_faces_and_interior(shape):
    T_, n, _ = shape
    plan = compile_plan("nar", make_schedule("nar", n, frames=T_))
    schedule = plan.schedule
    kinds_seen = set()
    for step in range(1, len(schedule)):
        fed = [divmod3(p, n) for p in schedule.steps[step - 1]]
        targets = [divmod3(p, n) for p in schedule.steps[step]]
        official = official_decode_rule(shape, fed, targets)
        sp = plan.steps[step]
        for j, target in enumerate(targets):
            ours = sorted((int(getattr(sp, f"{head}_idx")[j]), head) for head in ("right", "below", "frame")
                          if float(getattr(sp, f"{head}_w")[j]) > 0)
            assert ours == official[j], (target, ours, official[j])
            weights = {float(getattr(sp, f"{head}_w")[j]) for head in ("right", "below", "frame")} - {0.0}
            assert len(weights) == 1 and weights.pop() == pytest.approx(1.0 / len(official[j]))
            kinds_seen.add(sum(c > 0 for c in target))   # 1: an edge, 2: a face, 3: the interior
    assert kinds_seen == {1, 2, 3}
    # the prefill: (0, 0, 0) from all three heads of the condition token
    first = plan.steps[0]
    assert [float(first.right_w[0]), float(first.below_w[0]), float(first.frame_w[0])] == pytest.approx([1 / 3] * 3)


def divmod3(p, n):
    return (p // (n * n), p // n % n, p % n)


def official_training_logits(R, B, D, shape):
    """models/larp_ar.py `forward`, training branch, transcribed (B: the t head, D: the h head)."""
    T_, H, W = shape
    bsz, _, V = R.shape
    cond = (R[:, 0] + B[:, 0] + D[:, 0]) / 3
    R = R[:, 1:].reshape(bsz, T_, H, W, V).roll(shifts=1, dims=3)
    B = B[:, 1:].reshape(bsz, T_, H, W, V).roll(shifts=1, dims=1)
    D = D[:, 1:].reshape(bsz, T_, H, W, V).roll(shifts=1, dims=2)
    out = torch.zeros_like(R)
    out[:, 0, 0, 0] = cond
    out[:, 0, 0, 1:] = R[:, 0, 0, 1:]
    out[:, 1:, 0, 0] = B[:, 1:, 0, 0]
    out[:, 0, 1:, 0] = D[:, 0, 1:, 0]
    out[:, 1:, 0, 1:] = (R[:, 1:, 0, 1:] + B[:, 1:, 0, 1:]) / 2
    out[:, 1:, 1:, 0] = (B[:, 1:, 1:, 0] + D[:, 1:, 1:, 0]) / 2
    out[:, 0, 1:, 1:] = (D[:, 0, 1:, 1:] + R[:, 0, 1:, 1:]) / 2
    out[:, 1:, 1:, 1:] = (R[:, 1:, 1:, 1:] + B[:, 1:, 1:, 1:] + D[:, 1:, 1:, 1:]) / 3
    return out.reshape(bsz, -1, V)


def test_training_logits_match_official_forward(make_model):
    model = make_model("nar", grid=N, frames=T)
    tokens = torch.randint(0, 48, (2, T * N * N))
    with torch.no_grad():
        ours, _ = model(torch.tensor([0, 4]), tokens)
        x = torch.cat([model.embed_condition(ClassCondition(torch.tensor([0, 4])))[0], model.embed_tokens(tokens)], dim=1)
        feats = model.features(x, torch.arange(x.shape[1]), model.train_mask)
        official = official_training_logits(model.logits_right(feats.right), model.logits_frame(feats.frame),
                                            model.logits_below(feats.below), (T, N, N))
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)


def official_mask(shape):
    """models/larp_ar.py `setup_caches` + `setup_diagonal_mask`, transcribed."""
    T_, H, W = shape
    mask = torch.zeros(1 + T_ * H * W, 1 + T_ * H * W, dtype=torch.bool)
    mask[:, 0] = True  # the condition token is seen by all tokens
    previous = []
    for c in range(T_ + H + W - 2):
        current = [1 + t * H * W + h * W + (c - t - h) for t in range(T_) for h in range(H) if 0 <= c - t - h < W]
        previous += current
        for i in current:
            mask[i, previous] = True
    return mask


@pytest.mark.parametrize("shape", [(3, 4, 4), (4, 8, 8), (1, 5, 5)])
def test_3d_mask_is_the_official_one(shape):
    assert torch.equal(may_attend("nar", shape), official_mask(shape))


# -- schedules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("frames,n", [(1, 16), (2, 3), (4, 8), (4, 16), (8, 4), (3, 5)])
def test_video_step_counts(frames, n):
    assert len(nar(n, frames)) == frames + 2 * n - 2
    assert len(raster(n, frames)) == frames * n * n
    for window in (1, 2, n):
        assert len(zipar(n, window, frames)) == (frames * n - 1) * window + n


def test_headline_video_step_counts():
    assert (len(nar(8, 4)), len(raster(8, 4))) == (18, 256)
    assert (len(nar(16, 4)), len(raster(16, 4))) == (34, 1024)


@pytest.mark.parametrize("schedule", [nar(4, 3), raster(3, 4), zipar(4, 2, 3), nar(16, 4), zipar(8, 4, 4)])
def test_every_video_position_decoded_exactly_once(schedule):
    schedule.validate()
    flat = [p for step in schedule.steps for p in step]
    assert sorted(flat) == list(range(schedule.num_tokens))


def test_nar_planes_and_decoded_neighbours_first():
    n, frames = 4, 3
    step_of = nar(n, frames).step_of()
    for p in range(frames * n * n):
        t, h, w = divmod3(p, n)
        assert step_of[p] == t + h + w
        for q in ([p - 1] if w else []) + ([p - n] if h else []) + ([p - n * n] if t else []):
            assert step_of[q] < step_of[p]


def test_video_decode_yields_records_and_fills_each_position_once(make_model):
    model = make_model("nar", grid=N, frames=T)
    schedule = make_schedule("nar", N, frames=T)
    seen = torch.zeros(T * N * N, dtype=torch.long)
    for r in decode_steps(model, schedule, torch.tensor([2]), SamplingConfig(cfg_scale=1.0)):
        assert r.num_steps == T + 2 * N - 2
        seen[r.positions] += 1
        assert (r.grid[0, r.positions] >= 0).all()
    assert (seen == 1).all()


def test_a_schedule_of_another_shape_is_refused(make_model):
    model = make_model("nar", grid=N, frames=T)
    with pytest.raises(ValueError, match="3x3x3"):
        list(decode_steps(model, make_schedule("nar", N, frames=2), torch.tensor([0])))


# -- positions in time ---------------------------------------------------------------------------
def test_rope_turns_with_the_frame_index_and_images_keep_theirs():
    table = rope_table((4, 8, 8), head_dim=32)
    rows = table[[1 + t * 64 + 3 * 8 + 5 for t in range(4)]]       # (t, 3, 5) for every t
    assert all(not torch.equal(rows[0], rows[t]) for t in range(1, 4))
    turning = (rows[0] != rows[1]).any(-1)                          # pairs that turn with t
    assert int(turning.sum()) == 4                                  # a quarter of the 16 pairs
    image = rope_table((1, 8, 8), head_dim=32)
    assert torch.equal(table[1:65][:, ~turning], image[1:][:, ~turning])  # (h, w) pairs as in images


@pytest.mark.parametrize("kind", ["nar", "raster"])
def test_video_model_output_depends_on_the_frame_index(make_model, kind):
    """Fails if positions along t are ignored: with every frame given the angles of frame 0, the
    same clip must give different logits."""
    model = make_model(kind, grid=N, frames=T)
    tokens = torch.randint(0, 48, (1, T * N * N), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = model(torch.tensor([1]), tokens)
        true_rope = model.rope.clone()
        model.rope[1:] = true_rope[1 + torch.arange(T * N * N) % (N * N)]   # t forgotten
        forgotten, _ = model(torch.tensor([1]), tokens)
        model.rope.copy_(true_rope)
    assert (logits - forgotten).abs().max() > 1e-2


def test_the_paper_grid_4x16x16_decodes_in_34_steps(make_model):
    """The paper's UCF-101 latent: the engine runs it (34 NAR steps; raster's plan has 1,024)."""
    model = make_model("nar", grid=16, frames=4)
    records = list(decode_steps(model, make_schedule("nar", 16, frames=4), torch.tensor([0]),
                                SamplingConfig(cfg_scale=1.0)))
    assert len(records) == 34
    assert max(len(r.positions) for r in records) == 60        # the widest planes, c = 16 and 17
    seen = torch.zeros(1024, dtype=torch.long)
    for r in records:
        seen[r.positions] += 1
    assert (seen == 1).all() and (records[-1].grid >= 0).all()
    assert len(compile_plan("raster", make_schedule("raster", 16, frames=4)).steps) == 1024
