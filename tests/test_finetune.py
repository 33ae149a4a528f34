"""Fine-tuning jobs end to end on tiny models and a tiny upload made here."""
import io
import time
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from nar.checkpoint import class_names_of, read_checkpoint
from nar.config import SamplingConfig
from nar.decode import generate
from nar.finetune import Busy, FineTuneJob, FineTuneManager, FineTuneOptions
from nar.loading import build_transformer, load
from nar.pipeline import Studio
from nar.schedules import nar
from nar.render import tile
from nar.uploads import UploadReport, scan_upload


def shape_png(colour, seed):
    rng = np.random.default_rng(seed)
    img = np.full((16, 16, 3), 255, np.uint8)
    lo = rng.integers(1, 6)
    img[lo:lo + 8, lo:lo + 8] = colour
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def upload(tmp_path):
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(6):
            z.writestr(f"star/{i}.png", shape_png((250, 200, 0), i))
            z.writestr(f"cat/{i}.png", shape_png((200, 0, 0), 100 + i))
    return scan_upload([path], size=16)


@pytest.fixture
def studio(tiny_checkpoints):
    vq = load(tiny_checkpoints["vq"], expect="vq", device=torch.device("cpu"))
    return Studio(vq, load(tiny_checkpoints["nar"], expect="nar", device=torch.device("cpu")))


def wait(job, timeout=240):
    job.thread.join(timeout)
    assert not job.thread.is_alive(), "job did not finish"
    return job.state


def test_finetune_learns_a_new_class(studio, tiny_checkpoints, upload, tmp_path):
    manager = FineTuneManager(tmp_path / "runs")
    job = manager.start(studio, tiny_checkpoints["nar"], upload,
                        FineTuneOptions(steps=60, lr=3e-3, batch_size=8, preview_every=20))
    state = wait(job)
    assert state.status == "done", state.message
    first = np.mean([l for _, l in state.losses[:5]])
    last = np.mean([l for _, l in state.losses[-5:]])
    assert last < 0.8 * first
    assert state.preview is not None and state.preview_step == 60
    ckpt = read_checkpoint(state.checkpoint)
    assert class_names_of(ckpt) == ["cat", "dog", "sun", "star"]  # existing names keep their ids
    model = build_transformer(ckpt)
    grid = generate(model, nar(4), torch.tensor([3]), SamplingConfig(seed=0))
    assert grid.shape == (1, 4, 4) and (grid >= 0).all()
    studio.swap(load(state.checkpoint, expect="nar", device=torch.device("cpu")))
    assert studio.model_for("nar").class_names[-1] == "star"


def test_preview_decodes_in_the_studios_dtype(tiny_checkpoints, tmp_path, monkeypatch):
    """A Studio running bf16 previews in bf16 (what Generate shows after Use this model), not fp32."""
    cpu = torch.device("cpu")
    vq = load(tiny_checkpoints["vq"], expect="vq", device=cpu)
    studio = Studio(vq, load(tiny_checkpoints["nar"], expect="nar", device=cpu, dtype=torch.bfloat16))
    report = UploadReport(np.zeros((1, 16, 16, 3), np.uint8), np.zeros(1, np.int64), ["sun", "dog"])
    job = FineTuneJob(studio, tiny_checkpoints["nar"], report, FineTuneOptions(seed=3), tmp_path)
    seen = []

    def spy(model, *args, **kwargs):
        seen.append(next(model.parameters()).dtype)
        return generate(model, *args, **kwargs)
    monkeypatch.setattr("nar.finetune.generate", spy)
    job.make_preview(tiny_checkpoints["nar"], 5)
    assert seen == [torch.bfloat16]
    model = load(tiny_checkpoints["nar"], expect="nar", device=cpu, dtype=torch.bfloat16).model
    grid = generate(model, nar(4), torch.tensor([2, 1]), SamplingConfig(seed=3))   # sun, dog
    assert np.array_equal(job.state.preview, tile(list(studio.images(grid)))) and job.state.preview_step == 5


def test_cancel_keeps_checkpoint_resume_continues_and_second_job_is_busy(studio, tiny_checkpoints, upload, tmp_path):
    manager = FineTuneManager(tmp_path / "runs")
    options = FineTuneOptions(steps=3000, lr=1e-3, batch_size=4, preview_every=5)
    job = manager.start(studio, tiny_checkpoints["nar"], upload, options)
    with pytest.raises(Busy):
        manager.start(studio, tiny_checkpoints["nar"], upload, options)
    deadline = time.time() + 120
    while job.state.step < 12 and time.time() < deadline:
        time.sleep(0.05)
    assert manager.cancel()
    state = wait(job)
    assert state.status == "cancelled"
    saved = read_checkpoint(job.run_dir / "last.safetensors").extra["step"]
    assert 12 <= saved < 3000
    resumed = manager.start(studio, tiny_checkpoints["nar"], None,
                            FineTuneOptions(steps=saved + 10, lr=1e-3, batch_size=4, preview_every=5),
                            resume_run=job.run_id)
    state = wait(resumed)
    assert state.status == "done", state.message
    assert state.losses[0][0] == saved + 1  # continued, did not restart
    assert read_checkpoint(resumed.run_dir / "last.safetensors").extra["step"] == saved + 10


def test_bad_options_and_runs(studio, tiny_checkpoints, upload, tmp_path):
    manager = FineTuneManager(tmp_path / "runs")
    with pytest.raises(ValueError, match="steps"):
        manager.start(studio, tiny_checkpoints["nar"], upload, FineTuneOptions(steps=0))
    with pytest.raises(ValueError, match="layers"):
        manager.start(studio, tiny_checkpoints["nar"], upload, FineTuneOptions(train_layers="bogus"))
    with pytest.raises(ValueError, match="run id"):
        manager.start(studio, tiny_checkpoints["nar"], None, FineTuneOptions(), resume_run="../../etc")
    with pytest.raises(ValueError, match="does not exist"):
        manager.start(studio, tiny_checkpoints["nar"], None, FineTuneOptions(), resume_run="0123456789ab")
