import os
import pickle
from pathlib import Path

import pytest
import torch

from nar.checkpoint import CheckpointError, class_names_of, read_checkpoint, save_checkpoint, save_transformer
from nar.loading import build_transformer, resolve
from nar.config import ModelConfig
from nar.decode import generate
from nar.model import Transformer
from nar.schedules import make_schedule


def official_size_model(kind: str) -> Transformer:
    # 64-dim heads like every official size, so the head count can be inferred from shapes
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, dim=128, n_layer=2, n_head=2, vocab_size=32, grid_size=4,
                      num_classes=6)
    model = Transformer(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def test_safetensors_round_trip_is_bit_identical(make_model, tmp_path):
    model = make_model("nar", grid=4)
    path = save_transformer(tmp_path / "m.safetensors", model, [f"c{i}" for i in range(5)],
                            extra={"steps": 12})
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "nar" and ckpt.extra["steps"] == 12
    assert class_names_of(ckpt) == ["c0", "c1", "c2", "c3", "c4"]
    loaded = build_transformer(ckpt)
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    s = make_schedule("nar", 4)
    assert torch.equal(generate(model, s, torch.tensor([1, 2])), generate(loaded, s, torch.tensor([1, 2])))


@pytest.mark.parametrize("kind", ["nar", "raster"])
@pytest.mark.parametrize("wrap", ["model", "state_dict", "module", "ddp-prefix"])
def test_official_layout_loads(tmp_path, kind, wrap):
    model = official_size_model(kind)
    sd = model.state_dict()
    if wrap == "ddp-prefix":
        obj = {"model": {f"module.{k}": v for k, v in sd.items()}, "steps": 100}
    else:
        obj = {wrap: sd, "args": {"lr": 1e-4}}
    path = tmp_path / "c2i_official.pt"
    torch.save(obj, path)
    ckpt = read_checkpoint(path, grid_size=4)
    assert ckpt.kind == kind
    loaded = build_transformer(ckpt)
    assert loaded.config.n_layer == 2 and loaded.config.n_head == 2 and loaded.config.num_classes == 6
    s = make_schedule("nar" if kind == "nar" else "raster", 4)
    assert torch.equal(generate(model, s, torch.tensor([3])), generate(loaded, s, torch.tensor([3])))


def test_strict_keys_name_missing_and_unexpected(tmp_path):
    model = official_size_model("nar")
    sd = dict(model.state_dict())
    del sd["layers.1.feed_forward.w2.weight"]
    sd["layers.0.attention.extra.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as e:
        build_transformer(read_checkpoint(tmp_path / "broken.pt", grid_size=4))
    assert "layers.1.feed_forward.w2.weight" in str(e.value)
    assert "layers.0.attention.extra.weight" in str(e.value)


def test_wrong_shape_is_named(tmp_path):
    model = official_size_model("raster")
    ckpt = read_checkpoint(save_transformer(tmp_path / "m.safetensors", model, ["a"] * 6))
    ckpt.config["vocab_size"] = 40
    with pytest.raises(CheckpointError, match="wrong shape"):
        build_transformer(ckpt)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(path)
    assert not marker.exists()
    # the same with a plain (non-zip) pickle stream
    raw = tmp_path / "evil.bin"
    raw.write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(CheckpointError):
        read_checkpoint(raw)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage", b"\x80\x04garbage"])
def test_garbage_files_give_clear_errors(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a NAR Studio checkpoint"):
        read_checkpoint(tmp_path / "other.safetensors")


def test_failed_write_keeps_the_good_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, "vq", {"w": torch.ones(3)}, {"a": 1})
    good = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("nar.checkpoint.save_file", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(path, "vq", {"w": torch.zeros(3)}, {"a": 2})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def build_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = "a" * 40) -> None:
    """Lay out files the way huggingface_hub's cache does (refs/main -> snapshots/<commit>)."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name, data in files.items():
        target = repo_dir / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_hub_resolution_from_local_cache(make_model, tmp_path):
    model = make_model("nar", grid=4)
    local = save_transformer(tmp_path / "m.safetensors", model, list("abcde"))
    cache = tmp_path / "hub"
    build_hub_cache(cache, "nar-studio/tiny", {"weights/nar.safetensors": local.read_bytes()})
    path = resolve("nar-studio/tiny", "weights/nar.safetensors", cache_dir=str(cache), offline=True)
    loaded = build_transformer(read_checkpoint(path))
    assert torch.equal(loaded.output.weight, model.output.weight)
    same = resolve("hf://nar-studio/tiny/weights/nar.safetensors", cache_dir=str(cache), offline=True)
    assert same == path


def test_hub_missing_file_and_offline_errors_are_clear(tmp_path):
    cache = tmp_path / "hub"
    build_hub_cache(cache, "nar-studio/tiny", {"a.safetensors": b"x"})
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        resolve("nar-studio/tiny", "b.safetensors", cache_dir=str(cache), offline=True)
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        resolve("someone/else", "c2i_L_256.pt", cache_dir=str(cache), offline=True)


@pytest.mark.parametrize("repo,filename", [("../etc", "passwd"), ("a/b/c", "x"), ("owner/repo", "../../x"),
                                           ("owner/repo", "/etc/passwd"), ("owner", "x.pt"),
                                           ("owner/repo", "")])
def test_hub_names_cannot_escape(tmp_path, repo, filename):
    with pytest.raises(CheckpointError):
        resolve(repo, filename, cache_dir=str(tmp_path), offline=True)


def test_missing_local_path():
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        resolve("/nonexistent/model.safetensors")


# -- hostile headers, deep pickles, long paths, Hub names: refused at once with the limit named --
def write_safetensors_raw(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    import json
    import struct
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _refusal(path) -> tuple[str, float]:
    import time
    started = time.monotonic()
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    return str(e.value), time.monotonic() - started


def deep_config_safetensors(path: Path, depth: int = 200_000) -> Path:
    """A NAR Studio header whose config is JSON nested `depth` deep (400 KB)."""
    return write_safetensors_raw(path, {"__metadata__": {"nar_studio_kind": "nar",
                                                         "config": "[" * depth + "]" * depth}})


def test_deeply_nested_config_is_refused_without_recursion(tmp_path):
    config = deep_config_safetensors(tmp_path / "config.safetensors")
    message, seconds = _refusal(config)
    assert "metadata value 'config' is JSON nested 200,000 deep; the limit is 64" in message, message
    assert seconds < 1.5, seconds          # measured about 0.01 s
    header = b'{"__metadata__": {"nar_studio_kind": "nar"}, "w": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    message, seconds = _refusal(write_safetensors_raw(tmp_path / "header.safetensors", header))
    assert "the header is JSON nested 200,001 deep; the limit is 64" in message, message
    assert seconds < 1.5, seconds
    # brackets inside strings are not nesting: a real checkpoint with them still loads
    from nar.safetensors_header import json_depth
    assert json_depth('{"a": "[[[[{{{{\\"]]", "b": [1, [2]]}') == 3


def entries_header(n: int) -> bytes:
    entries = b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(n))
    return b'{"__metadata__":{"nar_studio_kind":"nar"},' + entries + b"}"


def test_header_with_too_many_entries_is_refused_quickly(tmp_path):
    message, seconds = _refusal(write_safetensors_raw(tmp_path / "many.safetensors", entries_header(100_000)))
    assert "the header lists 100,000 tensors; the limit is 10,000" in message, message
    assert seconds < 1.5, seconds          # measured about 0.15 s
    message, seconds = _refusal(write_safetensors_raw(tmp_path / "more.safetensors", entries_header(300_000)))
    assert "bytes; the limit is 8 MiB" in message, message
    assert seconds < 1.5, seconds
    big = write_safetensors_raw(tmp_path / "meta.safetensors",
                                {"__metadata__": {"nar_studio_kind": "nar", "extra.notes": "x" * (2 ** 20 + 1)}})
    message, _ = _refusal(big)
    assert "metadata value 'extra.notes' is 1,048,577 characters; the limit is 1 MiB" in message, message


def test_the_largest_official_models_fit_the_header_limits():
    from nar.config import VQConfig, model_config
    from nar.safetensors_header import HeaderLimits
    from nar.vq import VQModel
    with torch.device("meta"):
        counts = [len(Transformer(model_config("GPT-XXL", kind=k)).state_dict()) for k in ("nar", "raster")]
        counts.append(len(VQModel(VQConfig()).state_dict()))
    assert counts == [349, 340, 344]
    assert max(counts) * 20 < HeaderLimits().max_tensors


def test_deep_pickle_gives_a_clear_error(tmp_path):
    """A pickle stream of lists nested 200,000 deep (read without recursion by torch's
    weights-only reader; any RecursionError on the way is reported as a CheckpointError)."""
    import zipfile
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "base.pt")
    n = 200_000
    deep = b"\x80\x02}X\x05\x00\x00\x00model" + b"]" * n + b"a" * (n - 1) + b"s."
    with zipfile.ZipFile(tmp_path / "base.pt") as zin, zipfile.ZipFile(tmp_path / "deep.pt", "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, deep if info.filename.endswith("data.pkl") else zin.read(info))
    message, seconds = _refusal(tmp_path / "deep.pt")
    assert "holds no state dict" in message and seconds < 10, (message, seconds)

    def recursing(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")
    import nar.checkpoint
    original, nar.checkpoint.torch.load = nar.checkpoint.torch.load, recursing
    try:
        message, _ = _refusal(tmp_path / "base.pt")
    finally:
        nar.checkpoint.torch.load = original
    assert message == "base.pt is not a readable torch checkpoint (it is nested too deeply to read)"


def test_over_long_paths_say_file_name_too_long(tmp_path):
    long_path = str(tmp_path / ("x" * 5000 + ".safetensors"))
    for call in (lambda: read_checkpoint(long_path), lambda: resolve(long_path)):
        with pytest.raises(CheckpointError, match="^file name too long") as e:
            call()
        assert "Errno" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize("filename", ["~/.ssh/id_rsa", "~root/x.pt", "a/~/b.pt", "x.pt\n", "a?.pt", ".git/config",
                                      "C:\\x.pt", "a" * 201])
def test_hostile_hub_file_names_are_refused_before_any_network_call(tmp_path, monkeypatch, filename):
    import time

    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked for a file name that should have been refused")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    started = time.monotonic()
    for call in (lambda: resolve("owner/repo", filename, cache_dir=str(tmp_path)),
                 lambda: resolve(f"hf://owner/repo/{filename}", cache_dir=str(tmp_path))):
        with pytest.raises(CheckpointError, match="is not a file name inside a Hub repository"):
            call()
    assert time.monotonic() - started < 0.5
