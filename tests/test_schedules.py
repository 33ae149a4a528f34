import pytest

from nar.schedules import make_schedule, nar, raster, zipar


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 16, 24])
def test_step_counts(n):
    assert len(nar(n)) == 2 * n - 1
    assert len(raster(n)) == n * n
    for window in range(1, n + 1):
        assert len(zipar(n, window)) == (n - 1) * window + n


@pytest.mark.parametrize("n", [4, 8, 16])
def test_zipar_between_nar_and_raster_and_grows_with_window(n):
    counts = [len(zipar(n, w)) for w in range(2, n)]
    assert all(len(nar(n)) < c < len(raster(n)) for c in counts)
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_sixteen_grid_headline_numbers():
    assert (len(nar(16)), len(raster(16)), len(zipar(16, 8))) == (31, 256, 136)


@pytest.mark.parametrize("schedule", [nar(7), raster(5), zipar(6, 2), zipar(6, 1), zipar(5, 5)])
def test_every_position_exactly_once(schedule):
    schedule.validate()
    flat = [p for step in schedule.steps for p in step]
    assert sorted(flat) == list(range(schedule.num_tokens))


@pytest.mark.parametrize("n", [3, 6, 9])
def test_nar_order_left_and_above_first(n):
    step_of = nar(n).step_of()
    for p in range(n * n):
        h, w = divmod(p, n)
        assert step_of[p] == h + w
        if w:
            assert step_of[p - 1] < step_of[p]
        if h:
            assert step_of[p - n] < step_of[p]


@pytest.mark.parametrize("n,window", [(6, 2), (8, 3), (5, 1)])
def test_zipar_order_respects_window(n, window):
    s = zipar(n, window)
    step_of = s.step_of()
    for p in range(n * n):
        r, c = divmod(p, n)
        if c:
            assert step_of[p - 1] == step_of[p] - 1  # rows advance one token per step
        if r:
            held = sum(step_of[(r - 1) * n + j] < step_of[p] for j in range(n))
            assert held >= min(c + window, n)     # the row above is `window` ahead


def test_raster_order_is_raster():
    assert [p for step in raster(4).steps for p in step] == list(range(16))


def test_bad_arguments():
    with pytest.raises(ValueError):
        zipar(4, 0)
    with pytest.raises(ValueError):
        make_schedule("spiral", 4)
