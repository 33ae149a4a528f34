"""Faults the app survives, end to end on tiny random checkpoints (see test_reliability.py for the
server harness):

- the server is SIGKILLed while a fine-tuning run trains: every file the run left is complete (a
  partial write is only ever a hidden `.*.tmp` file, removed at the next start), the restarted
  server offers the run as interrupted, and Resume finishes it at its target step; generating kept
  serving, with identical images, while the run trained;
- a checkpoint write fails half-way (the disk is full): the run stops with the reason, the
  previous checkpoint stays as it was, no partial file is left, and the run resumes from it.

The numbers go to reports/reliability.json.
"""
from __future__ import annotations

import errno
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_reliability import AppServer, client_for, final_images, submit_generate  # noqa: E402
from test_training_tab import square_png  # noqa: E402


def pets_zip(path: Path, per_class: int = 6) -> Path:
    """"cat" (known to the model) and "star" (a new class)."""
    with zipfile.ZipFile(path, "w") as z:
        for i in range(per_class):
            z.writestr(f"cat/{i}.png", square_png((200, 20, 20), i))
            z.writestr(f"star/{i}.png", square_png((250, 200, 0), 100 + i))
    return path


def check_run_files(run_dir: Path) -> dict:
    """Every file a run holds, read back in full: what a kill may leave is only hidden .tmp files
    (and at most one cut-off last line of the append-only metrics log). Returns what was found."""
    from nar.checkpoint import read_checkpoint
    from nar.loading import build_transformer
    from nar.finetune import load_upload
    from nar.run_files import split_run_checkpoint
    found = {"tmp": sorted(p.name for p in run_dir.glob(".*.tmp"))}
    model, optimiser = split_run_checkpoint(run_dir / "last.safetensors")
    build_transformer(model)                               # complete: every tensor there, the right shapes
    found["step"] = int(read_checkpoint(run_dir / "last.safetensors").extra["step"])
    assert optimiser, "last.safetensors lacks the optimiser state"
    assert len(load_upload(run_dir).labels) == 12
    for tokens in run_dir.glob("tokens-*.npz"):
        with np.load(tokens) as f:
            assert f["tokens"].shape[1] == 12
    json.loads((run_dir / "run.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True) \
        if (run_dir / "metrics.jsonl").is_file() else []
    for i, line in enumerate(lines):
        try:
            json.loads(line)
        except ValueError:
            assert i == len(lines) - 1 and not line.endswith("\n"), f"corrupt metrics line {i}: {line!r}"
    if (run_dir / "best.safetensors").is_file():
        build_transformer(read_checkpoint(run_dir / "best.safetensors"))
    return found


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def test_server_killed_while_training_restarts_and_resumes(tiny_checkpoints, tmp_path, reliability_report):
    from gradio_client import handle_file
    from nar.checkpoint import read_checkpoint
    target = 1000          # far more than the run can do before it is killed, even on a fast machine
    runs_dir = tmp_path / "runs"
    upload = pets_zip(tmp_path / "pets.zip")
    seeds = (31, 32, 33, 34)
    first = AppServer(tiny_checkpoints["vq"].parent, runs_dir).start()
    try:
        client = client_for(first)
        references = [final_images(submit_generate(client, cls="sun", seed=s).result(timeout=120)) for s in seeds]
        job = client.submit([handle_file(str(upload))], "", target, 1e-3, 4, "all", 20, api_name="/train")

        def progress():
            outputs = job.outputs()
            return outputs[-1][7] if outputs and outputs[-1][7].get("status") == "training" else None
        info = wait_for(lambda: (p := progress()) and p["step"] >= 10 and p, 120, "training to start")
        run_id, step_before = info["run_id"], info["step"]
        # generating keeps working while the run trains, with the same images
        other = client_for(first)
        during = [final_images(submit_generate(other, cls="sun", seed=s).result(timeout=120)) for s in seeds]
        other.close()
        step_after = progress()["step"] if progress() else step_before
        identical = sum(all(np.array_equal(a, b) for a, b in zip(x, y)) for x, y in zip(during, references))
        reliability_report["generate_while_training"] = {
            "requests": len(seeds), "errors": 0, "identical": identical,
            "steps_meanwhile": step_after - step_before}
        assert identical == len(seeds)
        assert not job.done() and step_after > step_before      # the run went on meanwhile
        wait_for(lambda: (p := progress()) and p["step"] >= 40, 180, "step 40")
        seen = progress()["step"]          # (the progress stream is up to a second behind the run)
        assert not job.done(), "the run finished before it could be killed"
        first.kill()
        client.close()
    finally:
        first.stop()

    run_dir = runs_dir / run_id
    found = check_run_files(run_dir)
    saved = found["step"]
    assert 20 <= saved < target and saved % 20 == 0
    assert json.loads((run_dir / "run.json").read_text())["status"] == "training"   # as the kill left it
    # what a kill during a checkpoint write leaves: a hidden partial file next to the intact one
    (run_dir / ".last.safetensors.k1ll3d.tmp").write_bytes((run_dir / "last.safetensors").read_bytes()[:1000])
    partial = len(found["tmp"]) + 1

    with AppServer(tiny_checkpoints["vq"].parent, runs_dir) as second:
        assert not list(run_dir.glob(".*.tmp")), "the restart did not remove the partial writes"
        assert f"run {run_id} was interrupted at step {saved}" in second.log()
        client = client_for(second)
        status, bar, plot, preview, rid, info = client.predict(run_id, api_name="/train_status")
        assert info["status"] == "interrupted" and info["step"] == saved and info["total_steps"] == target
        assert "Interrupted" in status and "Resume" in status
        # the page load also shows the picked run's state (status, progress, loss curve, run, info)
        runs, note, layers, page_status, _bar, _plot, page_run, _info = client.predict(None, "all",
                                                                                  api_name="/train_runs")
        assert page_run == run_id and "Interrupted" in page_status
        assert f"Run {run_id} was interrupted at step {saved} of {target}" in note
        assert runs["value"] == run_id                            # picked under Runs, ready for Resume
        resumed = client.submit(run_id, target, 1e-3, 4, "all", 20, api_name="/train_resume")
        status, bar, plot, preview, files, runs, rid, info = resumed.result(timeout=600)
        assert info["status"] == "done", info["message"]
        assert rid == run_id and info["step"] == target
        steps = [step for step, _ in info["losses"]]     # the whole run's curve, no step logged twice
        assert steps[0] < saved < steps[-1] and steps == sorted(set(steps))
        assert "done: 7 steps" in submit_generate(client, seed=5).result(timeout=120)[1]
        client.close()

    found = check_run_files(run_dir)
    assert found["step"] == target and not found["tmp"]
    assert read_checkpoint(run_dir / "best.safetensors").extra["step"] == target
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "metrics.jsonl repeats or misses steps after the resume"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    reliability_report.setdefault("faults", {})["kill"] = {
        "target_steps": target, "last_seen_step": seen, "checkpoint_step": saved,
        "partial_files_left_by_the_kill": partial - 1, "partial_files_removed": partial,
        "finished_at_step": found["step"]}


def test_full_disk_during_fine_tuning_keeps_the_last_good_checkpoint(tiny_checkpoints, tmp_path, monkeypatch,
                                                                     reliability_report):
    """The third checkpoint write of a run fails half-way with ENOSPC (the run checkpoints every
    10 steps): the run fails with that reason, last.safetensors is still the one of step 20, byte
    for byte, no partial file is left, generating still works, and the run resumes to its end."""
    import torch

    import nar.checkpoint
    from nar.checkpoint import read_checkpoint
    from ui.service import Service
    from ui.training import TrainingService
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        service = Service.from_folder(tiny_checkpoints["vq"].parent, device="cpu", out_dir=tmp_path / "out")
        training = TrainingService(service, tmp_path / "runs", poll_seconds=0.1)
        real = nar.checkpoint.save_file
        writes = {"last": 0, "kept": None}

        def full_disk(tensors, filename, metadata=None):
            name = Path(filename).name
            if name.startswith(".last.safetensors."):
                writes["last"] += 1
                if writes["last"] == 3:
                    writes["kept"] = (Path(filename).parent / "last.safetensors").read_bytes()
                    real(tensors, filename, metadata=metadata)
                    data = Path(filename).read_bytes()
                    Path(filename).write_bytes(data[: len(data) // 2])     # half of it reached the disk
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real(tensors, filename, metadata=metadata)
        monkeypatch.setattr(nar.checkpoint, "save_file", full_disk)
        options = training.options(steps=60, lr=1e-3, batch_size=4, preview_every=10)
        job = training.start([str(pets_zip(tmp_path / "pets.zip"))], "", options)
        job.thread.join(300)
        run_dir = training.runs_dir / job.run_id
        assert job.state.status == "failed" and "No space left on device" in job.state.message
        assert (run_dir / "last.safetensors").read_bytes() == writes["kept"]
        assert read_checkpoint(run_dir / "last.safetensors").extra["step"] == 20
        assert not list(run_dir.glob(".*.tmp"))
        view = training.view(job.run_id)
        assert view.status == "failed" and "No space left on device" in view.text
        # the server side is unaffected: a request decodes
        assert next(u for u in service.generate(service.request(["nar"], class_name="dog")) if u.done).images
        # space again: the run resumes from its last good checkpoint and finishes
        monkeypatch.setattr(nar.checkpoint, "save_file", real)
        resumed = training.resume(job.run_id, options)
        resumed.thread.join(300)
        assert resumed.state.status == "done", resumed.state.message
        assert read_checkpoint(run_dir / "last.safetensors").extra["step"] == 60
        assert resumed.state.losses[0][0] == 21
    finally:
        torch.set_num_threads(threads)
    reliability_report.setdefault("faults", {})["full_disk"] = {
        "failed_write": 3, "kept_step": 20, "finished_at_step": 60}
