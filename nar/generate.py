"""Generate images from the command line, with any decoding order.

    python -m nar.generate --order nar --class-id smiley --seed 0 --out out.png --gif front.gif --json
    python -m nar.generate --checkpoint hf://owner/repo/c2i_L_256.pt --vq vq_ds16_c2i.pt --order nar ...
    python -m nar.generate --preset NAR-B --order nar --class-id "golden retriever"
    python -m nar.generate --video --order nar --class-id zoom_in --seed 0 --out clip.mp4 --gif front.gif --json
    python -m nar.generate --prompt "cat face" --order nar --seed 0 --out cat.png --gif front.gif --json
    python -m nar.generate --prompt "a red apple" --checkpoint t2i_XL.pt --vq vq_ds16_t2i.pt \
        --text-encoder t5:google/flan-t5-xl --grid-size 32 --order nar

Without --checkpoint the bundled models are used: the NAR model for `nar`, the raster model
for `raster` and `zipar` (with --video, the bundled video models; --out is then the clip:
.mp4, .gif, or .png for its frames side by side; with --prompt, the bundled text-to-image models
and text encoder). With --json the last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Optional

import numpy as np
import torch

from .checkpoint import CheckpointError
from .classes import ClassPicker
from .config import SamplingConfig
from .devices import pick_device
from .loading import BUNDLED_DIR, HUB_PREFIX, load, resolve
from .pipeline import Studio
from .prompts import OwnPromptEncoder, T5PromptEncoder
from .render import save_gif, save_mp4, save_png, tile
from .schedules import ORDERS


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The model, decoding-order and sampling options every sampling CLI shares
    (nar.generate, nar.sample); `load_models(args)` reads them back."""
    p.add_argument("--checkpoint", help="model file, Hub repo id (with --filename) or hf://owner/repo/file; "
                                        "default: the bundled model for the order")
    p.add_argument("--filename", help="file inside the Hub repo given by --checkpoint")
    p.add_argument("--preset", help="an official model by name (NAR-B, ...): NAR, its raster partner, the "
                                    "tokenizer, ImageNet names and the authors' sampling settings; "
                                    "--checkpoint then names a NAR file the preset could not confirm")
    p.add_argument("--list-presets", action="store_true", help="print the presets as JSON and exit")
    p.add_argument("--arch", help="architecture of an official --checkpoint: a size (GPT-B, GPT-L, ...) or a "
                                  "JSON object of fields (n_layer, dim, n_head, ...)")
    p.add_argument("--vq", default=str(BUNDLED_DIR / "vq.safetensors"), help="tokenizer file or hf://owner/repo/file")
    p.add_argument("--order", choices=ORDERS, default="nar")
    p.add_argument("--window", type=int, default=8, help="ZipAR window (tokens the row above must lead by)")
    p.add_argument("--seed", type=int, default=0, help="image i is sampled with seed + i")
    p.add_argument("--cfg-scale", type=float, help="default: the preset's, else 4.0")
    p.add_argument("--cfg-interval", type=int, help="default: the preset's, else -1")
    p.add_argument("--temperature", type=float, help="default: the preset's, else 1.0")
    p.add_argument("--top-k", type=int, help="0 = off; default: the preset's, else 2000")
    p.add_argument("--top-p", type=float, help="default: the preset's, else 1.0")
    p.add_argument("--grid-size", type=int, default=16, help="token grid of an official checkpoint")
    p.add_argument("--device", default="auto")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nar.generate", description=__doc__.split("\n\n")[0])
    add_sampling_arguments(p)
    p.add_argument("--class-id", action="append", default=None,
                   help="class index or name; repeat for several images (default 0)")
    p.add_argument("--num-images", type=int, default=1, help="images per class id")
    p.add_argument("--out", default="out.png", help="PNG of the final image(s)")
    p.add_argument("--gif", help="GIF of the decoding front, one frame per step")
    p.add_argument("--mp4", help="MP4 of the decoding front")
    p.add_argument("--fps", type=float, default=6.0)
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--video", action="store_true", help="generate clips with the video models (--class-id: a motion)")
    p.add_argument("--prompt", action="append", default=None,
                   help="text prompt for the text-to-image models; repeat for several images")
    p.add_argument("--text-encoder", default=str(BUNDLED_DIR / "text_encoder.safetensors"),
                   help="text encoder: our safetensors file, or t5:NAME_OR_FOLDER for FLAN-T5 through the "
                        "transformers library (the official t2i models: t5:google/flan-t5-xl)")
    return p


SAMPLING_FLAGS = ("cfg_scale", "cfg_interval", "temperature", "top_k", "top_p")


def parse_arch(text: Optional[str]):
    if text is None or not text.strip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--arch is neither a size name nor a JSON object ({e})") from e


def preset_models(args):
    from .presets import load_preset
    nar = None
    if args.checkpoint:
        text = args.checkpoint[len(HUB_PREFIX):] if args.checkpoint.startswith(HUB_PREFIX) else args.checkpoint
        parts = text.split("/") if args.filename is None else [*text.split("/"), args.filename]
        if len(parts) < 3:
            raise ValueError("with --preset, --checkpoint is a Hub file: hf://owner/repo/file")
        nar = ("/".join(parts[:2]), "/".join(parts[2:]))
    return load_preset(args.preset, device=args.device, nar=nar)


def make_studio(args) -> Studio:
    device = pick_device(args.device)
    vq = load(args.vq, expect="vq", device=device, grid_size=args.grid_size)   # an official VQ file's grid
    kind = "nar" if args.order == "nar" else "raster"
    text = bool(getattr(args, "prompt", None))   # nar.sample's arguments have no prompts
    if args.checkpoint:
        loaded = load(args.checkpoint, args.filename, expect=kind, device=device, grid_size=args.grid_size,
                      arch=parse_arch(args.arch))
    else:
        loaded = load(BUNDLED_DIR / f"{'t2i_' if text else ''}{kind}.safetensors", expect=kind, device=device)
    if text != (loaded.model.config.condition == "text"):
        raise ValueError(f"{loaded.source} is a {loaded.model.config.condition}-conditioned model: "
                         + ("give --class-id, not --prompt" if text else "give --prompt, not --class-id"))
    studio = Studio(vq, prompt_encoder=prompt_encoder(args.text_encoder, device) if text else None)
    studio.swap(loaded)
    return studio


def prompt_encoder(spec: str, device):
    """Our text encoder file, or t5:NAME for FLAN-T5 (transformers)."""
    if spec.startswith("t5:"):
        return T5PromptEncoder.from_pretrained(spec[3:], device=device)
    return OwnPromptEncoder.from_file(resolve(spec), device)


def sampling_flags(args) -> dict:
    """The sampling options given on the command line (the others take the preset's or the defaults)."""
    return {k: getattr(args, k) for k in SAMPLING_FLAGS if getattr(args, k) is not None}


def load_models(args) -> tuple[Studio, SamplingConfig, list[str]]:
    """The Studio and sampling settings the arguments name, with notes for the user: a --preset
    (its models and sampling defaults) or --checkpoint / --vq (default: the bundled models).
    Bad sampling flags are refused before any model loads."""
    given = sampling_flags(args)
    SamplingConfig(seed=args.seed, **given).validate()
    notes = []
    if args.preset and getattr(args, "prompt", None):
        raise ValueError("the presets are class-to-image models; --prompt takes --checkpoint (or the bundled models)")
    if args.preset:
        models = preset_models(args)
        if args.order != "nar" and models.preset.raster is None:
            raise ValueError(f"preset {args.preset} has no raster model: {models.preset.raster_missing}")
        studio, sampling, notes = models.studio, models.sampling(args.order, seed=args.seed, **given), models.notes
    else:
        studio = make_studio(args)
        sampling = SamplingConfig(seed=args.seed, **given).validate()
    loaded = studio.model_for(args.order)
    if loaded.head_count_inferred:
        notes.append(f"{loaded.source}: head count inferred as {loaded.model.config.n_head} (dim / 64); "
                     f"state it with --arch if this checkpoint differs")
    return studio, sampling, notes


def run(args) -> dict:
    if args.num_images < 1 or args.num_images > 64:
        raise ValueError("--num-images must be in [1, 64]")
    if args.prompt and args.class_id:
        raise ValueError("give --prompt (text models) or --class-id (class models), not both")
    studio, sampling, notes = load_models(args)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.prompt:
        entries = [p for p in args.prompt for _ in range(args.num_images)]
        labels = {"prompts": entries}
    else:
        picker = ClassPicker(studio.model_for(args.order).class_names)
        classes = [c for c in (args.class_id or ["0"]) for _ in range(args.num_images)]
        entries = [picker.lookup(c) for c in classes]
        labels = {"class_ids": entries, "class_names": [studio.model_for(args.order).class_names[i] for i in entries]}
    frames = []
    draw = (lambda record: frames.append(tile(studio.frames(record)))) if args.gif or args.mp4 else None
    out = studio(entries, order=args.order, sampling=sampling, window=args.window,
                 callback=draw)   # drawing frames is not counted in the decode time
    decode_seconds, images = out.seconds, out.images
    outputs = {"out": str(save_png(tile(list(images)), args.out))}
    if args.gif:
        outputs["gif"] = str(save_gif(frames, args.gif, fps=args.fps))
    if args.mp4:
        outputs["mp4"] = str(save_mp4(frames, args.mp4, fps=args.fps))
    n = studio.model_for(args.order).model.config.grid_size
    return {"order": args.order, "steps": out.steps, "grid": [n, n], "tokens": n * n,
            "window": args.window if args.order == "zipar" else None,
            "images": len(entries), **labels,
            "seconds": round(decode_seconds, 4),
            "images_per_second": round(len(entries) / max(decode_seconds, 1e-9), 3),
            "device": str(studio.device), "seed": args.seed, "sampling": dataclasses.asdict(sampling),
            "heads_inferred": studio.model_for(args.order).head_count_inferred, "notes": notes, **outputs}


def run_video(args) -> dict:
    """Clips from the bundled video models (or --checkpoint, a video model of the order's kind)."""
    from .video import BUNDLED_VIDEO, VideoStudio, model_kind, save_clip
    if args.num_images < 1 or args.num_images > 16:
        raise ValueError("--num-images must be in [1, 16] for clips")
    if args.preset or args.filename or args.arch:
        raise ValueError("--video takes a video model file as --checkpoint; --preset, --filename and --arch "
                         "are for image models")
    sampling = SamplingConfig(seed=args.seed, **sampling_flags(args)).validate()
    kind = model_kind(args.order)
    files = {"vq": args.vq, kind: args.checkpoint or BUNDLED_VIDEO[kind]}
    studio = VideoStudio.bundled(pick_device(args.device), files, kinds=(kind,))
    classes = [c for c in (args.class_id or ["0"]) for _ in range(args.num_images)]
    class_ids = studio.class_ids(args.order, classes)
    shape = studio.model_for(args.order).model.config.grid_shape
    animate = bool(args.gif or args.mp4)
    views, record = [], None
    with torch.inference_mode():
        for record in studio.decode_steps(args.order, class_ids, sampling, window=args.window):
            if animate:  # drawing frames is not counted in record.elapsed
                views.append(tile(studio.frames(record, shape)))
        clips = studio.clips(record.grid, shape[0])
    out = args.out if args.out != "out.png" else "clip.mp4"
    saved = save_clip(clips, out)
    outputs = {"out": str(saved)}
    if args.gif:
        outputs["gif"] = str(save_gif(views, args.gif, fps=args.fps))
    if args.mp4:
        outputs["mp4"] = str(save_mp4(views, args.mp4, fps=args.fps))
    names = studio.model_for(args.order).class_names
    return {"order": args.order, "steps": record.num_steps, "grid": list(shape), "tokens": int(np.prod(shape)),
            "window": args.window if args.order == "zipar" else None, "clips": len(class_ids),
            "class_ids": class_ids.tolist(), "class_names": [names[i] for i in class_ids.tolist()],
            "seconds": round(record.elapsed, 4),
            "clips_per_second": round(len(class_ids) / max(record.elapsed, 1e-9), 3),
            "device": str(studio.device), "seed": args.seed, **outputs}


def main(argv: Optional[list[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        from .presets import describe_presets
        print(json.dumps(describe_presets(), indent=1))
        return
    try:
        summary = run_video(args) if args.video else run(args)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['order']}: {summary['steps']} steps for a {'x'.join(map(str, summary['grid']))} grid "
              f"in {summary['seconds']:.3f} s -> {summary['out']}")


if __name__ == "__main__":
    main()
