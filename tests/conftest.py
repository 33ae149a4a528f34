import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nar.config import model_config  # noqa: E402
from nar.model import Transformer  # noqa: E402


def random_model(kind: str, grid: int = 4, vocab: int = 48, classes: int = 5, seed: int = 0,
                 dtype=torch.float32, frames: int = 1, text_prefix: int = 0, caption_dim: int = 12) -> Transformer:
    """A small model with random weights everywhere (also the heads LlamaGen zero-inits);
    frames > 1: a video model over frames x grid x grid tokens; text_prefix > 0: a text-to-image
    model with that many prefix tokens of caption_dim features."""
    torch.manual_seed(seed)
    text = dict(condition="text", cls_token_num=text_prefix, caption_dim=caption_dim) if text_prefix else {}
    cfg = model_config("GPT-tiny", kind=kind, vocab_size=vocab, grid_size=grid, num_classes=classes,
                       frames=frames, **text)
    model = Transformer(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model.to(dtype).eval()


@pytest.fixture
def one_thread():
    """One torch thread: the tiny models' convolutions only wait on each other with more on a busy CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_model():
    return random_model


def write_tiny_checkpoints(directory: Path, grid: int = 4, classes=("cat", "dog", "sun")) -> dict:
    """A random VQ (16 px images -> 4x4 tokens) and random NAR + raster models over its codebook,
    saved in our safetensors format: enough to drive the CLI and the app end to end."""
    from nar.checkpoint import save_checkpoint, save_transformer
    from nar.config import VQConfig
    from nar.vq import VQModel

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vq_cfg = VQConfig(codebook_size=32, codebook_embed_dim=4, encoder_ch_mult=[1, 1, 1],
                      decoder_ch_mult=[1, 1, 1], z_channels=32, base_channels=32, num_res_blocks=1,
                      image_size=grid * 4)
    vq = VQModel(vq_cfg)
    paths = {"vq": save_checkpoint(directory / "vq.safetensors", "vq", vq.state_dict(), vq_cfg.to_dict())}
    for kind in ("nar", "raster"):
        model = random_model(kind, grid=grid, vocab=32, classes=len(classes))
        paths[kind] = save_transformer(directory / f"{kind}.safetensors", model, list(classes))
    return paths


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("tiny"))


def write_tiny_image_set(directory: Path, classes=("cat", "dog", "sun"), per_class: int = 8, size: int = 16) -> Path:
    """A prepared-data-set folder (train/test npz + meta.json) of simple coloured shapes."""
    import json

    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", max(2, per_class // 4))):
        images, labels = [], []
        for label in range(len(classes)):
            for _ in range(count):
                img = np.full((size, size, 3), 255, np.uint8)
                colour = np.array([[220, 40, 40], [40, 160, 40], [240, 200, 20]][label % 3], np.uint8)
                lo, hi = sorted(rng.integers(2, size - 2, 2))
                img[lo:hi + 2, lo:hi + 2] = colour
                images.append(img)
                labels.append(label)
        with open(directory / f"{split}.npz", "wb") as f:
            np.savez(f, images=np.stack(images), labels=np.array(labels, np.int64))
    (directory / "meta.json").write_text(json.dumps({"class_names": list(classes), "image_size": size}))
    return directory


# -- the reliability report --------------------------------------------------------------------
REPORT = Path(__file__).resolve().parent.parent / "reports" / "reliability.json"


@pytest.fixture(scope="session")
def reliability_report():
    """Numbers the reliability tests measure, by section; at the end of the session they are merged
    into reports/reliability.json (sections not run this time keep their last values) and the
    README's table is written next to it as reports/reliability.md."""
    import json
    import time

    data: dict = {}
    yield data
    if not data:
        return
    try:
        old = json.loads(REPORT.read_text())
    except (OSError, ValueError):
        old = {}
    for key, value in data.items():      # a section's parts not measured this time keep their values
        old[key] = {**old[key], **value} if isinstance(value, dict) and isinstance(old.get(key), dict) else value
    old["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    from reliability_table import markdown
    REPORT.with_suffix(".md").write_text(markdown(json.loads(REPORT.read_text())))   # as the file orders it
