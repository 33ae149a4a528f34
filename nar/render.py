"""Token grids -> pictures: partial decodes with blank undecoded tokens, the front outlined,
clips as their frames side by side, and animations (GIF, MP4)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

FRONT_RGB = (255, 96, 0)
BLANK_LIGHT, BLANK_DARK = 236, 214   # checkerboard of the not-yet-decoded area


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def compose_frame(image: np.ndarray, decoded: np.ndarray, front: np.ndarray, scale: int = 4) -> np.ndarray:
    """One animation frame: `image` [H, W, 3] where `decoded` [n, n] is True, a checkerboard
    elsewhere, and a 1-pixel outline around the cells of `front` [n, n]."""
    n = decoded.shape[0]
    cell = image.shape[0] // n
    big = upscale(image, scale)
    px = cell * scale
    yy, xx = np.indices(big.shape[:2])
    checker = np.where(((yy // max(1, px // 2)) + (xx // max(1, px // 2))) % 2 == 0, BLANK_LIGHT, BLANK_DARK)
    blank = upscale(~decoded, px)[..., None]
    out = np.where(blank, checker[..., None].astype(np.uint8).repeat(3, axis=2), big)
    for h, w in zip(*np.nonzero(front)):
        y0, x0 = h * px, w * px
        out[y0, x0:x0 + px] = FRONT_RGB
        out[y0 + px - 1, x0:x0 + px] = FRONT_RGB
        out[y0:y0 + px, x0] = FRONT_RGB
        out[y0:y0 + px, x0 + px - 1] = FRONT_RGB
    return out


def compose_clip_frame(frames: np.ndarray, decoded: np.ndarray, front: np.ndarray, scale: int = 4,
                       gap: int = 4) -> np.ndarray:
    """One animation frame of a clip: its T frames [T, H, W, 3] side by side, each as
    compose_frame draws it with decoded / front [T, n, n]; the front plane is outlined across
    all frames at once."""
    return tile([compose_frame(f, d, fr, scale) for f, d, fr in zip(frames, decoded, front)], gap=gap)


def heat_overlay(frame: np.ndarray, values: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """`frame` [H, W, 3] with a heat map of `values` [n, n] in [0, 1] laid over it: red where low,
    yellow in between, green where high; NaN cells (not decoded) are left as they are."""
    n = values.shape[0]
    px = frame.shape[0] // n
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    heat = np.stack([np.clip(2 * (1 - v), 0, 1), np.clip(2 * v, 0, 1), np.zeros_like(v)], axis=-1) * 255
    heat = upscale(heat, px)
    weight = upscale((~np.isnan(values)).astype(np.float32) * alpha, px)[..., None]
    out = frame[: n * px, : n * px].astype(np.float32) * (1 - weight) + heat * weight
    result = frame.copy()
    result[: n * px, : n * px] = out.round().astype(np.uint8)
    return result


def tile(images: Sequence[np.ndarray], columns: int | None = None, gap: int = 4) -> np.ndarray:
    """Images of one size side by side on a white background, in rows of `columns`."""
    count = len(images)
    columns = columns or count
    rows = -(-count // columns)
    h, w = images[0].shape[:2]
    canvas = np.full((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = img
    return canvas


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return Path(path)


def save_gif(frames: Iterable[np.ndarray], path: str | Path, fps: float = 8.0, hold_last: float = 1.5) -> Path:
    """Frames as an endlessly looping GIF; the last frame is held for `hold_last` seconds."""
    import imageio.v3 as iio
    frames = list(frames)
    durations = [1000.0 / fps] * len(frames)
    durations[-1] = max(durations[-1], hold_last * 1000)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), extension=".gif", duration=durations, loop=0)
    return Path(path)


def save_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 8.0, hold_last: float = 1.5) -> Path:
    """Frames as an H.264 MP4 (sides padded to even sizes, as the codec requires)."""
    import imageio.v2 as imageio
    frames = list(frames)
    frames += [frames[-1]] * int(hold_last * fps)
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8,
                            macro_block_size=1, pixelformat="yuv420p") as writer:
        for frame in frames:
            writer.append_data(np.pad(frame, pad, constant_values=255))
    return Path(path)
