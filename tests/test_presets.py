"""Presets of the official models, ImageNet class names, stated architectures and fast Hub failures.

The presets load from a Hugging Face cache the test lays out itself (no download): the real repo ids
and file names, holding small random weights saved the way the official files are. Separately every
real preset's architecture is checked on the meta device against the key layout and shapes the
official model code (NAR-images and LlamaGen `autoregressive/models/gpt.py`) gives for that size.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nar.checkpoint import CheckpointError, read_checkpoint
from nar.classes import ClassPicker, imagenet_labels, imagenet_synonyms
from nar.config import ModelConfig, VQConfig
from nar.decode import generate
from nar.model import Transformer
from nar.loading import load
from nar.presets import PRESETS, get_preset, load_preset
from nar.schedules import make_schedule
from nar.vq import VQModel
from official_cache import build_official_cache, small_official_model, small_official_vq, small_preset

ROOT = Path(__file__).resolve().parent.parent


# -- ImageNet names and the picker ----------------------------------------------------------
def test_imagenet_names_are_the_standard_list():
    synonyms = imagenet_synonyms()
    assert len(synonyms) == 1000
    first = {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby", 388: "giant panda",
             417: "balloon", 980: "volcano"}
    for i, name in first.items():
        assert synonyms[i][0] == name, i
    assert "tabby cat" in synonyms[281]
    labels = imagenet_labels()
    assert labels[207] == "207 golden retriever" and len(set(labels)) == 1000


@pytest.mark.parametrize("query,expected", [
    (207, 207), ("207", 207), ("207 golden retriever", 207), ("Golden Retriever", 207),
    ("tabby cat", 281), ("giant panda", 388), ("golden ret", 207), ("volcan", 980), ("tench", 0)])
def test_picker_finds_classes(query, expected):
    assert ClassPicker(imagenet_labels()).lookup(query) == expected


@pytest.mark.parametrize("query,message", [("crane", "matches 2 classes"), ("1000", "out of range"),
                                           ("unicornzz", "unknown class"), ("retriever", "matches")])
def test_picker_refuses_unknown_and_ambiguous(query, message):
    with pytest.raises(ValueError, match=message):
        ClassPicker(imagenet_labels()).lookup(query)


def test_picker_search_and_other_models():
    found = ClassPicker(imagenet_labels()).search("retriever")
    assert "207 golden retriever" in found and "208 Labrador retriever" in found
    emoji = ClassPicker(["cat", "dog", "sun"])
    assert emoji.lookup("dog") == 1 and emoji.lookup("2") == 2 and emoji.search("s") == ["sun"]


# -- small weights in the official layouts (tests/official_cache.py) ---------------------------
@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A local Hub cache holding NAR-B's three files (small random weights) under their real names."""
    return build_official_cache(tmp_path_factory.mktemp("official"))


def test_preset_loads_from_the_cache_and_races_both_orders(hub_cache, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked although every file is cached")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", no_network)
    models = load_preset(small_preset("NAR-B"), device="cpu", cache_dir=str(hub_cache["cache"]), offline=False)
    studio = models.studio
    nar, raster = studio.models["nar"], studio.models["raster"]
    assert nar.source == "chenfeng1271/NAR-imagenet-256-B/last_version.pt"
    assert raster.source == "FoundationVision/LlamaGen/c2i_B_256.pt"
    assert studio.vq.source == "FoundationVision/LlamaGen/vq_ds16_c2i.pt"
    assert nar.class_names[207] == "207 golden retriever" == raster.class_names[207]
    assert not nar.head_count_inferred and nar.model.config.n_head == 4   # stated, not dim / 64 = 2
    assert nar.describe()["heads"] == 4
    # the authors' sampling settings; flags still override them
    nar_sampling, raster_sampling = models.sampling("nar"), models.sampling("zipar", seed=5)
    assert (nar_sampling.cfg_scale, nar_sampling.top_k, nar_sampling.top_p, nar_sampling.temperature) == (2.0, 0, 1.0, 1.0)
    assert raster_sampling.cfg_scale == 2.0 and raster_sampling.seed == 5
    ids = torch.tensor([models.picker().lookup("golden retriever"), models.picker().lookup("volcano")])
    assert ids.tolist() == [207, 980]
    for order, reference in (("nar", hub_cache["nar"]), ("raster", hub_cache["raster"])):
        sampling = models.sampling(order, seed=3)
        record = None
        for record in studio.decode_steps(order, ids, sampling):
            pass
        assert record.num_steps == (7 if order == "nar" else 16)
        expected = generate(reference, make_schedule(order, 4), ids, sampling)
        assert torch.equal(record.grid.reshape(2, 4, 4), expected), order   # the cached weights, exactly
        assert studio.images(record.grid[:1]).shape == (1, 64, 64, 3)


def test_missing_preset_files_are_named_at_once(tmp_path):
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        load_preset("NAR-B", device="cpu", cache_dir=str(tmp_path), offline=True)
    assert time.perf_counter() - start < 5
    for name in ("last_version.pt", "c2i_B_256.pt", "vq_ds16_c2i.pt"):
        assert name in str(e.value)
    assert "hf download chenfeng1271/NAR-imagenet-256-B last_version.pt" in str(e.value)


def test_unconfirmed_presets_say_so():
    for name in ("NAR-L", "NAR-XL"):
        assert "not confirmed" in PRESETS[name].missing()
        with pytest.raises(CheckpointError, match="not confirmed"):
            load_preset(name, offline=True)
    assert PRESETS["NAR-XL"].raster is None and "24 x 24" in PRESETS["NAR-XL"].raster_missing
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("NAR-Q")


def test_cli_lists_the_presets(capsys):
    from nar.generate import main
    main(["--list-presets"])
    rows = {row["preset"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["NAR-B"]["ready"] and rows["NAR-B"]["raster"] == "FoundationVision/LlamaGen/c2i_B_256.pt"
    assert rows["NAR-L"]["nar"] == "(not confirmed)" and rows["NAR-XL"]["raster"].startswith("none: ")


# -- every real preset against the official key layout, on the meta device ---------------------
def find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


def official_gpt_layout(n_layer: int, dim: int, n_head: int, vocab: int, num_classes: int, nar: bool):
    """{key: shape} of the official c2i Transformer, written from NAR-images / LlamaGen gpt.py:
    LabelEmbedder(num_classes + 1 rows), tok_embeddings, n_layer (+ medusa_attention_num = 1 for NAR)
    TransformerBlocks with fused wqkv ((n_head + 2 n_kv_head) * head_dim rows, n_kv_head = n_head),
    SwiGLU hidden find_multiple(int(2 * 4 * dim / 3), 256), norm + output, and medusa_norm +
    medusa_output for NAR. freqs_cis is a plain attribute, not in the state dict."""
    hidden = find_multiple(int(2 * (4 * dim) / 3), 256)
    layout = {"cls_embedding.embedding_table.weight": (num_classes + 1, dim),
              "tok_embeddings.weight": (vocab, dim), "norm.weight": (dim,), "output.weight": (vocab, dim)}
    for i in range(n_layer + (1 if nar else 0)):
        p = f"layers.{i}."
        layout.update({p + "attention.wqkv.weight": (3 * n_head * (dim // n_head), dim),
                       p + "attention.wo.weight": (dim, dim),
                       p + "feed_forward.w1.weight": (hidden, dim), p + "feed_forward.w3.weight": (hidden, dim),
                       p + "feed_forward.w2.weight": (dim, hidden),
                       p + "attention_norm.weight": (dim,), p + "ffn_norm.weight": (dim,)})
    if nar:
        layout.update({"medusa_norm.weight": (dim,), "medusa_output.weight": (vocab, dim)})
    return layout


# parameters published for each size: NAR paper Table 1 (NAR) and LlamaGen README.md (raster)
PUBLISHED_PARAMS_M = {"NAR-B": (130, 111), "NAR-L": (372, 343), "NAR-XL": (816, 775)}


@pytest.mark.parametrize("name", list(PRESETS))
def test_real_preset_architecture_matches_the_official_layout(name):
    preset = PRESETS[name]
    arch = preset.architecture()
    kinds = ["nar"] + (["raster"] if preset.raster is not None else [])
    for kind, published in zip(kinds, PUBLISHED_PARAMS_M[name]):
        config = ModelConfig(kind=kind, **{k: arch[k] for k in ("n_layer", "dim", "n_head", "vocab_size",
                                                                "num_classes", "grid_size")})
        with torch.device("meta"):
            model = Transformer(config)
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        official = official_gpt_layout(arch["n_layer"], arch["dim"], arch["n_head"], arch["vocab_size"],
                                       arch["num_classes"], nar=kind == "nar")
        assert ours == official, f"{name} {kind}: {sorted(set(ours) ^ set(official))[:5]}"
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(params - published) / published < 0.01, (name, kind, params, published)
    assert arch["dim"] // arch["n_head"] == 64          # every published size uses 64-dim heads
    if preset.raster is not None:                       # c2i_B_256.pt: 256 px / 16 = the NAR grid
        assert f"_{preset.grid_size * 16}.pt" in preset.raster.file
    with torch.device("meta"):
        vq = VQModel(VQConfig(image_size=preset.grid_size * 16))
    assert vq.cfg.grid_size == preset.grid_size and vq.cfg.codebook_size == preset.vocab_size
    assert abs(sum(p.numel() for p in vq.parameters()) / 1e6 - 72) < 0.5   # LlamaGen: vq_ds16_c2i, 72M


# -- stating the architecture of an official file ---------------------------------------------
def test_head_count_is_stated_or_flagged(tmp_path):
    model = small_official_model("nar", 0)   # 4 heads of 32: dim / 64 would guess 2
    path = tmp_path / "c2i_small.pt"
    torch.save({"model": model.state_dict()}, path)
    s = make_schedule("nar", 4)
    ids = torch.tensor([3, 207])
    guessed = load(path, device=torch.device("cpu"), grid_size=4)
    assert guessed.head_count_inferred and guessed.model.config.n_head == 2
    assert "inferred" in str(guessed.describe()["heads"])
    assert not torch.equal(generate(guessed.model, s, ids), generate(model, s, ids))   # the guess is wrong
    stated = load(path, device=torch.device("cpu"), arch={"n_head": 4, "grid_size": 4})
    assert not stated.head_count_inferred
    assert torch.equal(generate(stated.model, s, ids), generate(model, s, ids))
    path.with_name(path.name + ".json").write_text(json.dumps({"n_layer": 2, "dim": 128, "n_head": 4,
                                                               "grid_size": 4}))
    beside = load(path, device=torch.device("cpu"))
    assert not beside.head_count_inferred and beside.model.config.grid_size == 4
    assert torch.equal(generate(beside.model, s, ids), generate(model, s, ids))


@pytest.mark.parametrize("arch,message", [("GPT-L", "n_layer is 2 in the file but 24"),
                                          ({"n_head": 3}, "not divisible"),
                                          ({"heads": 4}, "unknown architecture field"),
                                          ("GPT-Q", "unknown architecture")])
def test_wrong_architecture_is_refused(tmp_path, arch, message):
    path = tmp_path / "c2i.pt"
    torch.save({"model": small_official_model("raster", 0).state_dict()}, path)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path, arch=arch)


def test_unreadable_sidecar_is_refused(tmp_path):
    path = tmp_path / "c2i.pt"
    torch.save({"model": small_official_model("raster", 0).state_dict()}, path)
    path.with_name("c2i.pt.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="c2i.pt.json is not readable JSON"):
        read_checkpoint(path)


# -- fast Hub failures ----------------------------------------------------------------------
def timed_resolve(env: dict, tmp_path: Path):
    code = ("import time, tempfile\nfrom nar.loading import resolve; from nar.checkpoint import CheckpointError\nt = time.perf_counter()\n"
            "try:\n    resolve('FoundationVision/LlamaGen', 'c2i_L_256.pt', cache_dir=tempfile.mkdtemp())\n"
            "except CheckpointError as e:\n    print(round(time.perf_counter() - t, 3)); print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HOME": str(tmp_path / "hf"), **env})
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0 and len(lines) == 2, result.stdout + result.stderr
    return float(lines[0]), lines[1]


@pytest.fixture
def silent_server():
    """A loopback port that accepts connections and never answers: a Hub behind a dead network."""
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("env,why", [({"HF_HUB_OFFLINE": "1"}, "offline mode is on"),
                                     ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "the Hub could not be reached"),
                                     ({"HF_ENDPOINT": "silent"}, "the Hub could not be reached")])
def test_offline_hub_failure_is_fast_and_says_what_to_do(tmp_path, env, why, silent_server):
    env = {"HF_HUB_OFFLINE": "0", **{k: silent_server if v == "silent" else v for k, v in env.items()}}
    seconds, message = timed_resolve(env, tmp_path)
    assert seconds < 5, seconds   # huggingface_hub's own retries take about 25 s here
    assert why in message and "hf download FoundationVision/LlamaGen c2i_L_256.pt" in message
    assert "HF_HOME" in message


# -- the command line -------------------------------------------------------------------------
def test_cli_arch_and_imagenet_names(tmp_path):
    nar, vq = tmp_path / "c2i_small.pt", tmp_path / "vq.pt"
    torch.save({"model": small_official_model("nar", 0).state_dict()}, nar)
    torch.save({"model": small_official_vq().state_dict()}, vq)
    base = [sys.executable, "-m", "nar.generate", "--checkpoint", str(nar), "--vq", str(vq), "--grid-size", "4",
            "--class-id", "golden retriever", "--class-id", "980", "--out", str(tmp_path / "x.png"), "--json"]
    stated = subprocess.run(base + ["--arch", '{"n_layer": 2, "dim": 128, "n_head": 4}'], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert stated.returncode == 0, stated.stderr
    summary = json.loads(stated.stdout.strip().splitlines()[-1])
    assert summary["class_ids"] == [207, 980] and summary["class_names"] == ["207 golden retriever", "980 volcano"]
    assert summary["heads_inferred"] is False and "inferred" not in stated.stderr
    guessed = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert guessed.returncode == 0, guessed.stderr
    assert json.loads(guessed.stdout.strip().splitlines()[-1])["heads_inferred"] is True
    assert "head count inferred as 2" in guessed.stderr
    missing = subprocess.run([sys.executable, "-m", "nar.generate", "--preset", "NAR-B", "--out", str(tmp_path / "y.png")],
                             cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "hf download chenfeng1271/NAR-imagenet-256-B last_version.pt" in missing.stderr
