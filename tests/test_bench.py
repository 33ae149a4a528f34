"""python -m nar.bench runs and reports what it promises (no timing assertions: speed targets
are read from its output, not asserted in unit tests)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_json(tiny_checkpoints, tmp_path):
    folder = Path(tiny_checkpoints["nar"]).parent
    result = subprocess.run([sys.executable, "-m", "nar.bench", "--quick", "--json", "--checkpoints", str(folder),
                             "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["speedup"]) >= {"nar_vs_raster", "zipar_vs_raster"}
    assert all(v > 0 for v in report["speedup"].values())
    steps = {r["label"]: r["steps"] for r in report["results"]}
    assert steps == {"bundled nar": 7, "bundled zipar-4": 16, "bundled zipar-8": 16, "bundled raster": 16}
    assert all(r["batch"] == 1 and r["cfg"] and r["rounds"] == 3 for r in report["results"])
    assert report["vq"]["vq_decode_median_s"] > 0
    assert report["limits"]["bandwidth_bytes_per_s"] > 0 and report["limits"]["matmul_flops_per_s"] > 0
    for r in report["results"]:
        assert r["bound_per_image_s"] > 0 and r["flops"] > 0 and r["bytes_read"] > 0
        assert r["times_bound"] * r["bound_per_image_s"] == pytest.approx(r["latency_median_s"])
    assert (tmp_path / f"{report['device']}-quick.json").is_file()


def test_bench_full_writes_plots(tiny_checkpoints, tmp_path):
    folder = Path(tiny_checkpoints["nar"]).parent
    result = subprocess.run([sys.executable, "-m", "nar.bench", "--json", "--checkpoints", str(folder), "--sizes", "",
                             "--batches", "1,2", "--rounds", "2", "--out-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {(r["batch"], r["cfg"]) for r in report["results"]} == {(1, True), (1, False), (2, True), (2, False)}
    for name in report["plots"]:   # named relative to the report's folder
        assert Path(name).name == name and (tmp_path / name).stat().st_size > 1000


def test_cases_that_run_out_of_gpu_memory_are_left_out(make_model):
    from nar.bench import Case, time_interleaved

    class TooBig(Case):
        def run(self):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    model = make_model("nar", grid=4)
    cases = [Case("small", "s", model, "nar", None, 1, True), TooBig("big", "s", model, "nar", None, 64, True)]
    messages = []
    outcomes = time_interleaved(cases, rounds=2, warmup=1, progress=messages.append)
    assert len(outcomes[0].times) == 2 and outcomes[0].left_out is None
    assert outcomes[1].times == [] and outcomes[1].left_out == "does not fit in GPU memory"
    assert any("does not fit" in m and "big" in m for m in messages)


def graphed_cases(make_model, suites=("a", "b"), batches=(1, 2)):
    from nar.bench import cases_for
    nar_model, raster_model = make_model("nar", grid=4), make_model("raster", grid=4)
    cases = []
    for suite in suites:
        cases += cases_for(suite, suite, nar_model, raster_model, batches, [True], graphs=True)
    return cases


def test_graphed_cases_are_grouped_by_suite_and_batch_and_by_free_memory(make_model):
    from nar.bench import case_bytes, plan_groups
    cases = graphed_cases(make_model)
    groups = plan_groups(cases, free_bytes=None)
    assert sorted(i for g in groups for i in g) == list(range(len(cases)))
    assert [{(cases[i].suite, cases[i].batch) for i in g} for g in groups] == \
        [{("a", 1)}, {("a", 2)}, {("b", 1)}, {("b", 2)}]
    # free memory for about two of the largest cases: groups split, each within the budget
    budget = max(case_bytes(c) for c in cases) * 2
    small = plan_groups(cases, free_bytes=int(budget / 0.8) + 1)
    assert sorted(i for g in small for i in g) == list(range(len(cases)))
    assert all(sum(case_bytes(cases[i]) for i in g) <= budget for g in small)
    assert all(len({(cases[i].suite, cases[i].batch) for i in g}) == 1 for g in small)
    assert len(groups) < len(small) < len(cases)
    assert plan_groups(cases, free_bytes=1) == [[i] for i in range(len(cases))]   # alone, even if too big
    for case in cases:
        case.graphs = False
    assert plan_groups(cases, free_bytes=1) == [list(range(len(cases)))]           # eager: one group


def test_each_group_is_freed_before_the_next(make_model, monkeypatch):
    import nar.bench as bench
    cases = graphed_cases(make_model, suites=("a",))
    groups = bench.plan_groups(cases, free_bytes=None)
    live, most, freed = set(), [0], []
    build = bench.GraphedDecode

    class Counted(build):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            live.add(id(self))
            most[0] = max(most[0], len(live))

        def release(self):
            live.discard(id(self))
            super().release()

    monkeypatch.setattr(bench, "GraphedDecode", Counted)
    monkeypatch.setattr(bench, "free_memory", lambda device: freed.append(len(live)))
    written = []
    outcomes = bench.time_interleaved(cases, rounds=2, warmup=1, progress=lambda m: None, groups=groups,
                                      group_done=lambda o: written.append(sorted(o)))
    assert most[0] == max(len(g) for g in groups) < len(cases)   # never more than one group at a time
    assert freed == [0] * len(groups) and not live                 # each group released, then freed
    assert written == [sorted(sum(groups[:k + 1], [])) for k in range(len(groups))]
    assert all(len(o.times) == 2 for o in outcomes.values())


@pytest.mark.parametrize("failure", ["oom", "oom then capture_end", "other"])
def test_a_failed_capture_is_released_reported_and_the_run_goes_on(make_model, monkeypatch, failure):
    """As on a GPU: GraphedDecode captures while warming up; here the capture fails."""
    import weakref
    import nar.bench as bench
    import nar.graphs as graphs
    buffers = []

    def failing_capture(self):
        pool_tensor = torch.zeros(1000)           # stands in for the half-built graph pool
        self.tokens.append(pool_tensor)
        buffers.append(weakref.ref(pool_tensor))
        buffers.append(weakref.ref(self.state.caches[0].k))
        if failure == "other":
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        try:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        finally:
            if failure == "oom then capture_end":   # torch.cuda.graph's exit calls capture_end()
                raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs.GraphedDecode, "_capture", failing_capture)
    alive_when_freed = []
    monkeypatch.setattr(bench, "free_memory",
                        lambda device: alive_when_freed.append([b() is not None for b in buffers]))
    cases = graphed_cases(make_model, suites=("a",), batches=(1,))[:2]
    outcomes = bench.time_interleaved(cases, rounds=2, warmup=1, progress=lambda m: None)
    assert all(o.times == [] for o in outcomes.values())
    expected = "does not fit in GPU memory" if failure != "other" else "CUDA graph capture failed"
    assert all(o.left_out.startswith(expected) for o in outcomes.values())
    # freed after each failed case (and once after the group); nothing half-built was alive by then
    assert alive_when_freed and all(not any(alive) for alive in alive_when_freed)


def test_bench_writes_results_as_it_goes_and_not_into_benchmarks(tiny_checkpoints, tmp_path, monkeypatch):
    import nar.bench as bench
    folder = Path(tiny_checkpoints["nar"]).parent
    snapshots = []
    real = bench.time_interleaved

    def spy(cases, rounds, warmup, progress, groups, group_done):
        def after_group(outcomes):
            group_done(outcomes)
            snapshots.append(json.loads(next(tmp_path.glob("*-quick.json")).read_text()))
        return real(cases, rounds, warmup, progress, [[0, 1], [2, 3]], after_group)

    monkeypatch.setattr(bench, "time_interleaved", spy)
    bench.main(["--quick", "--checkpoints", str(folder), "--out-dir", str(tmp_path)])
    assert [len(s["results"]) for s in snapshots] == [2, 4] and not any(s["complete"] for s in snapshots)
    final = json.loads(next(tmp_path.glob("*-quick.json")).read_text())
    assert final["complete"] and len(final["results"]) == 4 and final["cuda_graphs"] is False
    assert all(r["cuda_graphs"] is False for r in final["results"])
    parser_default = bench.ROOT / "runs" / "bench"
    assert "benchmarks" not in str(parser_default)


def test_busy_neighbour_runs_beside_the_timing_and_is_stopped(tiny_checkpoints, tmp_path, monkeypatch):
    import nar.bench as bench
    import nar.threads as threads
    folder = Path(tiny_checkpoints["nar"]).parent
    started = []
    real_start, real_timing = bench.start_busy_neighbour, bench.time_interleaved

    def spy_start():
        started.append(real_start())
        return started[-1]

    def timing_while_busy(*args, **kwargs):
        assert started and started[0].poll() is None     # the neighbour runs while cases are timed
        return real_timing(*args, **kwargs)

    monkeypatch.setattr(bench, "start_busy_neighbour", spy_start)
    monkeypatch.setattr(bench, "time_interleaved", timing_while_busy)
    monkeypatch.setattr(threads, "POLICY", threads.ThreadPolicy())
    threads_before = torch.get_num_threads()
    try:
        bench.main(["--quick", "--busy-neighbour", "--fixed-threads", "--threads", "1", "--checkpoints", str(folder),
                    "--out-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads_before)
    assert len(started) == 1 and started[0].poll() is not None   # stopped when the timing ended
    report = json.loads((tmp_path / "cpu-1threads-quick-busy-fixed.json").read_text())
    assert report["busy_neighbour"] is True and report["complete"]
    assert report["threads"] == {"torch_threads": 1, "policy": {"adaptive": False, "min_rows_per_thread": 8}}
    assert len(report["load_average_start"]) == 3 and len(report["results"]) == 4


def test_bench_compile_times_compiled_twins_beside_the_eager_cases(tiny_checkpoints, tmp_path, one_thread):
    from nar import bench
    folder = Path(tiny_checkpoints["nar"]).parent
    bench.main(["--quick", "--compile", "--checkpoints", str(folder), "--out-dir", str(tmp_path)])
    report = json.loads((tmp_path / f"{bench.device_name(torch.device('cpu'))}-quick-compile.json").read_text())
    rows = {(r["label"], r["compiled"]): r for r in report["results"]}
    labels = ["bundled nar", "bundled zipar-4", "bundled zipar-8", "bundled raster"]
    assert set(rows) == {(label, compiled) for label in labels for compiled in (False, True)}
    for label in labels:   # the same decode either way: same steps; compiling is the warm-up
        assert rows[label, True]["steps"] == rows[label, False]["steps"]
        assert rows[label, True]["warmup_s"] > 0 and rows[label, True]["rounds"] == 3
    assert set(report["speedup_compiled"]) >= {"nar_vs_raster", "zipar_vs_raster"}
    assert report["compiled_graphs"] >= 3   # NAR, raster and ZipAR steps differ in shape
    _, table = bench.read_report(tmp_path / f"{report['device']}-quick-compile.json")
    assert {row["label"] for row in table} >= {"nar", "nar (compiled)", "raster (compiled)"}
