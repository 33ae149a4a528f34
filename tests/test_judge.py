"""The judge classifier and the Frechet distance used by nar.eval."""
import numpy as np
import torch

from nar.eval import frechet_distance
from nar.judge import JudgeTrainConfig, load_judge, predict, train_judge


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = mu_a + rng.standard_normal((200_000, 3)) * np.sqrt(var_a)
    b = mu_b + rng.standard_normal((200_000, 3)) * np.sqrt(var_b)
    expected = ((mu_a - mu_b) ** 2).sum() + (var_a + var_b - 2 * np.sqrt(var_a * var_b)).sum()
    assert abs(frechet_distance(a, b) - expected) < 0.05
    assert abs(frechet_distance(a, a)) < 1e-6


def test_judge_trains_and_separates_tiny_classes(tmp_path):
    from conftest import write_tiny_image_set
    data = write_tiny_image_set(tmp_path / "data", per_class=16)
    out = tmp_path / "judge.safetensors"
    best = train_judge(JudgeTrainConfig(data=str(data), out=str(out), epochs=25, batch_size=16, lr=3e-3))
    judge, names, meta = load_judge(out)
    assert names == ["cat", "dog", "sun"] and meta["test_accuracy"] == best["test_accuracy"]
    # the three classes differ only in colour: a trained judge must tell them apart
    assert best["test_accuracy"] >= 0.9
    images = torch.rand(5, 3, 32, 32) * 2 - 1  # other sizes are resized to the judge's
    labels, feats = predict(judge, images)
    assert labels.shape == (5,) and feats.shape == (5, judge.config.widths[-1])
