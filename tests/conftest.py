import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nar.config import model_config  # noqa: E402
from nar.model import Transformer  # noqa: E402


def random_model(kind: str, grid: int = 4, vocab: int = 48, classes: int = 5, seed: int = 0,
                 dtype=torch.float32) -> Transformer:
    """A small model with random weights everywhere (also the heads LlamaGen zero-inits)."""
    torch.manual_seed(seed)
    cfg = model_config("GPT-tiny", kind=kind, vocab_size=vocab, grid_size=grid, num_classes=classes)
    model = Transformer(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model.to(dtype).eval()


@pytest.fixture
def make_model():
    return random_model
