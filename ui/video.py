"""The Video tab's logic: clips decoded live, as the Generate tab decodes images (the decoder at
full speed in its own thread, the view drawing only its newest step: ui/live.py), the T frames
side by side with undecoded tokens blank and the front plane outlined in every frame at once;
then the clip as MP4 and GIF; any kept step drawn again; and the NAR vs raster race for clips on
ui/race.py's scheduler. Plain Python, no Gradio.

The video models are the server's (the checkpoints folder's video_nar / video_raster with its
tokenizer), shared and read-only; what is a visitor's own is their decodes and kept results.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from nar.checkpoint import CheckpointError
from nar.devices import pick_device
from nar.render import tile
from nar.video import VideoStudio, save_clip

from .files import JobFiles, slug
from .live import KeptSteps, LiveDecode, StepView, watch
from .race import Clock, CompareUpdate, Race, RaceFrame, decode_clock, race_captions, race_frames, race_row
from .requests import GenerateRequest, parse_request
from .stream import DecodeRun, step_caption, stop_caption

VIDEO_ORDERS = ("nar", "raster", "zipar")
RACE_ORDERS = ("raster", "nar")
RACE_HEADERS = ["Order", "Steps", "Decode time (s)", "Clips/s", "Speed-up vs raster"]
MAX_CLIPS = 4
VIEW_WIDTH = 640                 # px: the live view's frames side by side are upscaled to about this
NO_VIDEO = ("no video models are loaded on this server: put video_nar.safetensors and video_raster.safetensors "
            "(with the vq.safetensors they were trained on) in its checkpoints folder")

log = logging.getLogger("nar.ui")


def load_video_models(folder: Optional[Path], device) -> tuple[Optional[VideoStudio], str]:
    """The video models of a checkpoints folder (those of video_nar, video_raster that are there)
    and a note for the tab; (None, why) when there are none or they do not load."""
    if folder is None:
        return None, NO_VIDEO
    folder = Path(folder)
    kinds = tuple(k for k in ("nar", "raster") if (folder / f"video_{k}.safetensors").is_file())
    if not kinds or not (folder / "vq.safetensors").is_file():
        return None, NO_VIDEO
    files = {"vq": folder / "vq.safetensors", **{k: folder / f"video_{k}.safetensors" for k in kinds}}
    try:
        studio = VideoStudio.bundled(pick_device(device), files, kinds)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        log.warning("video models not loaded: %s", e)
        return None, f"the video models in the checkpoints folder did not load ({e})"
    missing = [k for k in ("nar", "raster") if k not in kinds]
    return studio, (f"no {missing[0]} video model is loaded: only the {kinds[0]} order's" if missing else "")


def clip_shape(studio: VideoStudio, order: str) -> tuple[int, int, int]:
    return studio.model_for(order).model.config.grid_shape


def view_scale(studio: VideoStudio, shape: tuple[int, int, int], width: int = VIEW_WIDTH) -> int:
    """How much the live view's frames are upscaled: 4x for 4 frames of 32 px, less when wider."""
    frames, n, _ = shape
    return max(1, min(4, width // max(1, frames * n * studio.vq.cfg.downsample)))


def parse_video_request(studio: Optional[VideoStudio], orders: Sequence[str], class_name=0, num_clips=1, window=4,
                        cfg_scale=3.0, cfg_interval=-1, temperature=1.0, top_k=0, top_p=1.0,
                        seed=0) -> GenerateRequest:
    """A checked clip request (ui.requests.parse_request's checks, a motion class, at most MAX_CLIPS)."""
    if studio is None:
        raise ValueError(NO_VIDEO)
    first = next(iter(studio.models.values())).model.config
    return parse_request(studio, orders, class_name, num_clips, window, cfg_scale, cfg_interval, temperature,
                         top_k, top_p, seed, grid_size=first.grid_size, max_images=MAX_CLIPS,
                         count_name="number of clips")


def view_at(kept: KeptSteps, step: int, front: bool = True) -> StepView:
    """The kept decode after `step` steps (0: nothing decoded), its last step's positions outlined
    when `front`."""
    last = kept.positions[step - 1] if step and front else torch.empty(0, dtype=torch.long)
    return StepView(step - 1, kept.num_steps, last, kept.grid_at(step), kept.elapsed[step - 1] if step else 0.0)


def clip_view(studio: VideoStudio, view, shape, scale: int) -> np.ndarray:
    """One row per clip: its T frames side by side, undecoded tokens blank, the view's positions
    outlined in every frame at once."""
    return tile(studio.frames(view, shape, scale), columns=1)


def clip_caption(order: str, step: int, num_steps: int, elapsed: float, shape) -> str:
    grid = " x ".join(map(str, shape))
    return f"{step_caption(order, step, num_steps, elapsed)} · {grid} tokens (raster: {int(np.prod(shape))} steps)"


@dataclass
class VideoUpdate:
    frame: np.ndarray                 # the clips' frames side by side (one clip a row)
    step: int                         # 1-based
    num_steps: int
    elapsed: float                    # decode seconds so far
    caption: str
    done: bool = False
    mp4: Optional[Path] = None        # the clip itself (the last update)
    gif: Optional[Path] = None
    summary: dict = field(default_factory=dict)
    stopped: bool = False
    kept: Optional[KeptSteps] = None  # every step's tokens, for the scrubber (the last update)


def video_stream(studio: VideoStudio, files: JobFiles, request: GenerateRequest, run: DecodeRun,
                 started: Callable[[LiveDecode], None] = lambda d: None) -> Iterator[VideoUpdate]:
    """The newest step while the decoder runs at full speed in its own thread; then the clips (the
    whole clip, or as far as a Stop let it get) with the clip files. `started` gets the running
    decode (Stop stops it)."""
    order, sampling = request.order, request.sampling
    class_ids = request.conditions[order].class_ids
    shape = clip_shape(studio, order)
    scale = view_scale(studio, shape)
    num_steps = len(studio.schedule(order, request.window))
    kept = KeptSteps(order, num_steps, len(class_ids), int(np.prod(shape)))
    run.num_steps = num_steps
    decode = LiveDecode(studio.decode_steps(order, class_ids, sampling, window=request.window), kept.keep).start()
    started(decode)

    def render(step: int):       # the newest kept step the view sampler picked
        run.step = step
        return step, clip_view(studio, view_at(kept, step), shape, scale)

    for step, frame in watch(decode, render):
        if step < num_steps:
            yield VideoUpdate(frame, step, num_steps, kept.elapsed[step - 1],
                              clip_caption(order, step, num_steps, kept.elapsed[step - 1], shape))
    done, seconds = kept.done, kept.seconds
    kept.stopped = done < num_steps
    run.step = done
    clips = studio.clips(kept.grid_at(done), shape[0])
    names = studio.model_for(order).class_names
    job = files.new("video")
    base = f"{order}-{slug(names[int(class_ids[0])])}-seed{sampling.seed}"
    mp4, gif = save_clip(clips, job / f"{base}.mp4"), save_clip(clips, job / f"{base}.gif")
    summary = {"order": order, "window": request.window if order == "zipar" else None, "steps": num_steps,
               "steps_done": done, "grid": list(shape), "seconds": round(seconds, 4), "clips": len(class_ids),
               "clips_per_s": round(len(class_ids) / max(seconds, 1e-9), 3), "class": names[int(class_ids[0])],
               "seed": sampling.seed}
    if kept.stopped:
        caption = stop_caption(order, done, num_steps, seconds)
    else:
        caption = f"{clip_caption(order, num_steps, num_steps, seconds, shape)} · {summary['clips_per_s']:.2f} clips/s"
    final = clip_view(studio, view_at(kept, done, front=kept.stopped), shape, scale)
    yield VideoUpdate(final, done, num_steps, seconds, caption, done=True, mp4=mp4, gif=gif, summary=summary,
                      stopped=kept.stopped, kept=kept)


def scrub_view(studio: VideoStudio, kept: KeptSteps, step: int) -> np.ndarray:
    """A kept clip decode after `step` steps, drawn now from its tokens (nothing decoded again)."""
    shape = clip_shape(studio, kept.order)
    return clip_view(studio, view_at(kept, step), shape, view_scale(studio, shape))


def video_race_stream(studio: VideoStudio, request: GenerateRequest, max_frames: int,
                      run: DecodeRun, clock: Clock = decode_clock,
                      started: Callable[[LiveDecode], None] = lambda d: None) -> Iterator[CompareUpdate]:
    """Raster and NAR on the same motion and seed, interleaved by their decode clocks (ui/race.py)
    in their own thread, the newest race frame drawn when the view has time; the last update has
    the table of steps, seconds and clips/s."""
    steppers = {o: studio.decode_steps(o, request.conditions[o], request.sampling, window=request.window)
                for o in RACE_ORDERS}
    num_steps = {o: len(studio.schedule(o, request.window)) for o in RACE_ORDERS}
    shapes = {o: clip_shape(studio, o) for o in RACE_ORDERS}
    scale = min(view_scale(studio, s) for s in shapes.values())
    race = Race(steppers, num_steps, clock, max_frames)
    kept: list[RaceFrame] = []
    run.num_steps = sum(num_steps.values())
    decode = LiveDecode(race_frames(race), kept.append).start()
    started(decode)

    def draw(frame: RaceFrame, final: bool = False) -> CompareUpdate:
        pictures = {}
        for o in RACE_ORDERS:
            finished = frame.steps[o] >= num_steps[o]
            front = frame.fronts[o][:0] if finished else frame.fronts[o]       # no front once done
            view = StepView(frame.steps[o] - 1, num_steps[o], front, frame.grids[o], frame.elapsed[o])
            pictures[o] = studio.frames(view, shapes[o], scale)[0]
        run.step = sum(frame.steps.values())
        return CompareUpdate(pictures, race_captions(frame, num_steps, final and decode.stopping), frame.clock,
                             elapsed=dict(frame.elapsed), steps=dict(frame.steps))

    yield from watch(decode, lambda k: draw(kept[k - 1]))
    if not kept:
        raise ValueError("the race was stopped before it started")
    last = kept[-1]
    update = draw(last, final=True)
    update.stopped = any(last.steps[o] < num_steps[o] for o in RACE_ORDERS)
    update.rows = [race_row(last, o, num_steps[o], request.window, update.stopped) for o in RACE_ORDERS]
    update.done, update.kept = True, kept
    yield update
