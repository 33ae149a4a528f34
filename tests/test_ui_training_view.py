"""ui/training_view.py: a run's state from its folder (run.json holds its progress), the loss
curve, the progress bar and durations."""
import json

from nar.finetune import read_run_file, write_run_file
from ui.training_view import disk_view, duration, loss_frame, progress_html


def test_run_json_is_the_store_of_a_runs_progress(tmp_path):
    run = tmp_path / "0123456789ab"
    run.mkdir()
    write_run_file(run, status="training", step=0, target_steps=100)
    write_run_file(run, step=40)
    write_run_file(run, status="interrupted", step=40)
    record = read_run_file(run)
    assert [(h["status"], h["step"]) for h in record["history"]] == [("training", 0), ("interrupted", 40)]
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 2.0}) + "\n" +
                                       json.dumps({"step": 20, "loss": 1.5}) + "\n{cut sho")
    view = disk_view(run)
    assert view.status == "interrupted" and view.info["step"] == 40 and view.info["total_steps"] == 100
    assert view.losses == [(10, 2.0), (20, 1.5)] and "Interrupted" in view.text and view.finished
    write_run_file(run, status="done", step=100)
    assert disk_view(run).status == "done" and "Finished" in disk_view(run).text
    write_run_file(run, status="cancelled", step=60, target_steps=200)
    assert disk_view(run).status == "stopped" and "step 60 of 200" in disk_view(run).text


def test_loss_frame_thins_and_smooths():
    losses = [(s, 10.0 / s) for s in range(1, 1001)]
    frame = loss_frame(losses, max_points=100)
    assert set(frame["curve"]) == {"loss per step", "moving average"}
    raw = frame[frame["curve"] == "loss per step"]
    smooth = frame[frame["curve"] == "moving average"]
    assert len(raw) == len(smooth) == 100 and raw["step"].iloc[0] == 1 and raw["step"].iloc[-1] == 1000
    assert (smooth["loss"].values[1:] >= raw["loss"].values[1:]).all()    # a falling curve: the average lags
    assert len(loss_frame([])) == 0


def test_formatting():
    assert [duration(s) for s in (None, 5.4, 125, 7300)] == ["?", "5 s", "2 min 05 s", "2 h 01 min"]
    bar = progress_html(0.25, "step <5>", "done")
    assert 'aria-valuenow="25"' in bar and "width:25.0%" in bar and "step &lt;5&gt;" in bar and "done" in bar
    assert 'aria-valuenow="100"' in progress_html(3.0, "")
