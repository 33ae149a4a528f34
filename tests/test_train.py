"""Training loop: the loss falls, checkpoints are atomic and complete, resume is exact."""
import json

import torch

from nar.checkpoint import read_checkpoint
from nar.loading import build_transformer
from nar.train import Callbacks, TrainConfig, extend_classes, train_loop
from nar.tokens import TokenSet


def toy_tokens(n_images=48, grid=4, vocab=16, classes=3, seed=0) -> TokenSet:
    """Class c's images are noisy versions of a per-class token pattern: learnable structure."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_images) % classes
    patterns = torch.randint(0, vocab, (classes, grid, grid), generator=g)
    tokens = patterns[labels].clone()
    noise = torch.rand(tokens.shape, generator=g) < 0.1
    tokens[noise] = torch.randint(0, vocab, (int(noise.sum()),), generator=g)
    return TokenSet(tokens=torch.stack([tokens, tokens.flip(-1)]), labels=labels)


def config(tmp_path, **kw) -> TrainConfig:
    base = dict(kind="nar", size="GPT-tiny", run_dir=str(tmp_path / "run"), steps=30, batch_size=8,
                lr=3e-3, warmup=5, eval_every=10, ckpt_every=10, log_every=5, dropout=0.0)
    base.update(kw)
    return TrainConfig(**base)


def final_state(path):
    return {k: v for k, v in read_checkpoint(path).state_dict.items()}


def test_loss_falls_and_best_checkpoint_loads(tmp_path):
    data = toy_tokens()
    cfg = config(tmp_path, steps=60)
    best = train_loop(cfg, data, data, ["a", "b", "c"], vocab_size=16, grid_size=4)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert vals[-1] < 0.6 * vals[0]
    model = build_transformer(read_checkpoint(best))
    assert model.config.kind == "nar" and model.config.num_classes == 3


def test_resume_continues_exactly(tmp_path):
    data = toy_tokens()

    class StopAt(Callbacks):
        def __init__(self, step):
            self.step, self.seen = step, 0

        def on_metrics(self, metrics):
            self.seen = metrics["step"]

        def should_stop(self):
            return self.seen >= self.step

    straight = config(tmp_path / "a", kind="raster", dropout=0.1)
    train_loop(straight, data, None, ["a", "b", "c"], 16, 4)
    interrupted = config(tmp_path / "b", kind="raster", dropout=0.1)
    train_loop(interrupted, data, None, ["a", "b", "c"], 16, 4, callbacks=StopAt(13))
    assert read_checkpoint(tmp_path / "b" / "run" / "last.safetensors").extra["step"] == 13
    train_loop(interrupted, data, None, ["a", "b", "c"], 16, 4)
    a = final_state(tmp_path / "a" / "run" / "last.safetensors")
    b = final_state(tmp_path / "b" / "run" / "last.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)


def test_a_run_restarted_before_its_first_checkpoint_logs_each_step_once(tmp_path):
    """A run killed before it wrote last.safetensors starts again from step 0: what it logged is
    dropped, not kept in front of the new run's lines."""
    data = toy_tokens()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 5, "loss": 9.0}\n{"step": 10, "loss": 9.0}\n{"step": 1')
    train_loop(config(tmp_path, steps=10, eval_every=100), data, None, ["a", "b", "c"], 16, 4)
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and 9.0 not in losses, steps


def test_extend_classes_keeps_old_rows_and_null_last(make_model):
    model = make_model("nar", grid=4, classes=3)
    grown, names, remap = extend_classes(model, ["x", "y", "z"], ["y", "new1", "new2"])
    assert names == ["x", "y", "z", "new1", "new2"]
    assert remap.tolist() == [1, 3, 4]          # data label i (of "y", "new1", "new2") -> class id
    old = model.cls_embedding.embedding_table.weight
    new = grown.cls_embedding.embedding_table.weight
    assert new.shape[0] == 6
    assert torch.equal(new[:3], old[:3]) and torch.equal(new[-1], old[-1])
    assert torch.equal(grown.output.weight, model.output.weight)


def test_fine_tuning_from_init_maps_the_labels_to_the_extended_classes(tiny_checkpoints, tmp_path, monkeypatch):
    """Data labelled by its own class list ["star", "dog"] trains the init model's "dog" row (id 1)
    and a new "star" row (id 3), not rows 0 and 1."""
    seen = []

    class Watch(Callbacks):
        def on_start(self, class_names):
            seen.append(class_names)
    tokens = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    data = TokenSet(tokens, torch.tensor([0, 1, 0, 1]))
    cfg = TrainConfig(kind="nar", run_dir=str(tmp_path / "run"), init=str(tiny_checkpoints["nar"]), steps=2,
                      batch_size=2, ckpt_every=2, log_every=1, eval_every=10 ** 9)
    import nar.train as train_module
    labels_used = []
    real = train_module.get_batch

    def spy(data, idx, *args):
        labels_used.append(data.labels.clone())
        return real(data, idx, *args)
    monkeypatch.setattr(train_module, "get_batch", spy)
    train_loop(cfg, data, None, ["star", "dog"], 32, 4, Watch())
    assert seen == [["cat", "dog", "sun", "star"]]
    assert labels_used[0].tolist() == [3, 1, 3, 1]


def test_train_cli_under_torchrun_with_two_processes(tiny_checkpoints, tmp_path):
    """DistributedDataParallel on CPU (gloo): the same entry point, launched by torchrun."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import write_tiny_image_set

    data = write_tiny_image_set(tmp_path / "data")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "nar.train", "nar", "--data", str(data), "--vq", str(tiny_checkpoints["vq"]),
           "--run-dir", str(run), "--size", "GPT-tiny", "--steps", "4", "--batch-size", "4",
           "--eval-every", "2", "--ckpt-every", "2", "--log-every", "1", "--threads", "1",
           "--out", str(tmp_path / "final.safetensors")]
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = read_checkpoint(run / "last.safetensors")
    assert ckpt.extra["step"] == 4 and ckpt.extra["class_names"] == ["cat", "dog", "sun"]
    model = build_transformer(read_checkpoint(tmp_path / "final.safetensors"))
    assert model.config.grid_size == 4 and model.config.vocab_size == 32
    assert result.stdout.count("step=4 ") == 1  # only rank 0 logs


def test_killed_training_resumes_and_leaves_no_partial_files(tiny_checkpoints, tmp_path):
    """kill -9 the trainer repeatedly, at moments that include checkpoint writes: every restart
    resumes from an intact last.safetensors and the run still ends at the requested step."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from conftest import write_tiny_image_set

    data = write_tiny_image_set(tmp_path / "data")
    run = tmp_path / "run"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "nar.train", "raster", "--data", str(data), "--vq", str(tiny_checkpoints["vq"]),
           "--run-dir", str(run), "--size", "GPT-tiny", "--steps", "400", "--batch-size", "4",
           "--ckpt-every", "1", "--eval-every", "50", "--log-every", "50", "--threads", "1"]
    steps_seen = []
    for delay in (0.0, 0.13, 0.37):
        before = read_checkpoint(run / "last.safetensors").extra["step"] if (run / "last.safetensors").is_file() else 0
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until this process has written a checkpoint of its own
            path = run / "last.safetensors"
            try:
                if path.is_file() and read_checkpoint(path).extra["step"] > before:
                    break
            except Exception:
                pass
            time.sleep(0.02)
        time.sleep(delay)  # then kill it at varying points, checkpoint writes included
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (run / "last.safetensors").is_file():
            steps_seen.append(read_checkpoint(run / "last.safetensors").extra["step"])  # always readable
    assert steps_seen and steps_seen == sorted(steps_seen)
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {run / 'last.safetensors'} at step {steps_seen[-1]}" in result.stdout or steps_seen[-1] == 0
    assert read_checkpoint(run / "last.safetensors").extra["step"] == 400
    assert not list(run.glob(".*.tmp"))
