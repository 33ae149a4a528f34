"""Images -> VQ token grids, computed once per (image set, tokenizer) and cached on disk.

Each image is tokenized as-is and horizontally flipped (LlamaGen's code extraction does the
same), so training can pick either view of an image at no extra encoder cost. Video frames
are tokenized without the flipped view (flip=False): mirroring a clip changes its motion class.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .checkpoint import atomic_write
from .images import ImageSet, to_tensor

ProgressFn = Callable[[int, int], None]


@dataclass
class TokenSet:
    tokens: torch.Tensor   # long [views, N, n, n] (video: [1, N, T, n, n]): views[0] original, views[1] flipped
    labels: torch.Tensor   # long [N]

    def __len__(self) -> int:
        return self.labels.shape[0]


@torch.inference_mode()
def encode_images(vq, images: np.ndarray, batch_size: int = 64,
                  progress: Optional[ProgressFn] = None, flip_view: bool = True) -> torch.Tensor:
    """uint8 NHWC images -> token grids [2, N, n, n] (original and flipped; [1, N, n, n]
    without the flipped view)."""
    device = next(vq.parameters()).device
    views = []
    flips = (False, True) if flip_view else (False,)
    for flip in flips:
        chunks = []
        for start in range(0, len(images), batch_size):
            x = to_tensor(images[start:start + batch_size]).to(device)
            if flip:
                x = x.flip(-1)
            chunks.append(vq.encode(x).cpu())
            if progress:
                progress(len(views) * len(images) + min(start + batch_size, len(images)), len(flips) * len(images))
        views.append(torch.cat(chunks))
    return torch.stack(views)


def tokenize(vq, vq_path: str, images: ImageSet, cache_dir: Optional[Path] = None,
             progress: Optional[ProgressFn] = None, flip_view: bool = True) -> TokenSet:
    """Tokens of an image set, reusing a cache file keyed by the tokenizer and image bytes."""
    key = hashlib.sha256()
    key.update(Path(vq_path).read_bytes() if Path(vq_path).is_file() else vq_path.encode())
    key.update(images.images.tobytes())
    if not flip_view:
        key.update(b"no flipped view")
    cache = Path(cache_dir) / f"tokens-{key.hexdigest()[:16]}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as f:
            return TokenSet(torch.from_numpy(f["tokens"]).long(), torch.from_numpy(f["labels"]).long())
    tokens = encode_images(vq, images.images, progress=progress, flip_view=flip_view)
    result = TokenSet(tokens, torch.from_numpy(images.labels).long())
    if cache is not None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, tokens=tokens.numpy().astype(np.int16), labels=images.labels)
        atomic_write(cache, write)
    return result
