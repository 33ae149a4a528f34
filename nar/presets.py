"""The official ImageNet models by name: NAR, its same-size LlamaGen raster partner, the tokenizer.

A preset names every file on the Hugging Face Hub, states the architecture (so nothing is
guessed), the class names and the sampling settings of the paper or the authors' scripts, and
says what was confirmed about each file and where. `load_preset("NAR-B")` gives a ready Studio.

Sampling: NAR's ImageNet results (paper, Table 1) use CFG 2.0; the authors' evaluation script
(NAR-images autoregressive/sample/sample_c2i_ddp.py) samples with top-k 0 (off), top-p 1.0 and
temperature 1.0, and its GETTING_STARTED.md runs GPT-B with --cfg-scale 2.0. LlamaGen's
GETTING_STARTED.md gives its per-size CFG (B 2.0, L 2.0, XL 1.75, XXL 1.75, 3B 1.65) with the same
script defaults. Sources read: github.com/ThisisBillhe/NAR at 225c1fb and
github.com/FoundationVision/LlamaGen at ce98ec4.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import torch

from .arch import stated_architecture
from .checkpoint import CheckpointError
from .classes import ClassPicker
from .config import SamplingConfig
from .devices import pick_device
from .loading import load, resolve
from .pipeline import Studio

LLAMAGEN = "FoundationVision/LlamaGen"
LLAMAGEN_README = "github.com/FoundationVision/LlamaGen README.md (commit ce98ec4), class-conditional table"


@dataclass(frozen=True)
class HubFile:
    """One checkpoint on the Hub; `file` is None when its name could not be confirmed."""
    repo: Optional[str]
    file: Optional[str]
    confirmed: str                     # what is known about the file, and where it was seen

    @property
    def name(self) -> str:
        return f"{self.repo}/{self.file}"


@dataclass(frozen=True)
class Preset:
    name: str
    nar: HubFile
    raster: Optional[HubFile]          # the same-size LlamaGen model decoding the same token grid
    raster_missing: str                # why there is none ("" when there is one)
    vq: HubFile
    arch: Union[str, Mapping[str, int]]  # a size of nar/config.py or explicit n_layer / dim / n_head
    grid_size: int = 16
    vocab_size: int = 16384
    num_classes: int = 1000
    class_names: str = "imagenet"
    nar_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(cfg_scale=2.0, top_k=0))
    raster_sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(cfg_scale=2.0, top_k=0))
    sampling_source: str = ""

    def architecture(self) -> dict[str, int]:
        """Every field the official shapes are checked against, and the head count and grid."""
        fields = stated_architecture(self.arch)
        missing = {"n_layer", "dim", "n_head"} - set(fields)
        if missing:
            raise ValueError(f"preset {self.name} does not state {sorted(missing)}")
        return {**fields, "vocab_size": self.vocab_size, "num_classes": self.num_classes,
                "grid_size": self.grid_size}

    def missing(self) -> str:
        """Why the preset cannot load as it stands ("" when it can)."""
        if self.nar.repo is None or self.nar.file is None:
            return f"the NAR file of {self.name} is not confirmed: {self.nar.confirmed}"
        return ""


NAR_SAMPLING_SOURCE = ("NAR: paper Table 1 (CFG 2.0); NAR-images GETTING_STARTED.md (GPT-B, --cfg-scale 2.0) "
                       "and sample_c2i_ddp.py defaults (top-k 0, top-p 1.0, temperature 1.0)")
VQ16 = HubFile(LLAMAGEN, "vq_ds16_c2i.pt",
               f"{LLAMAGEN_README}: vq_ds16_c2i, 72M parameters, 16x16 / 24x24 / 32x32 tokens, linked as "
               f"huggingface.co/FoundationVision/LlamaGen/resolve/main/vq_ds16_c2i.pt; NAR-images README.md "
               f"names the same file as NAR's tokenizer. VQ-16 built here has 71.9M parameters.")


def _llamagen_sampling(size: str, cfg: float) -> dict[str, Any]:
    """The raster partner's sampling fields of a Preset, from LlamaGen's GETTING_STARTED.md."""
    return dict(raster_sampling=SamplingConfig(cfg_scale=cfg, top_k=0),
                sampling_source=f"{NAR_SAMPLING_SOURCE}; LlamaGen-{size}: GETTING_STARTED.md (--cfg-scale "
                                f"{cfg}) and sample_c2i_ddp.py defaults (top-k 0, top-p 1.0, temperature 1.0)")


PRESETS: dict[str, Preset] = {}


def _register(preset: Preset) -> None:
    PRESETS[preset.name] = preset


_register(Preset(
    name="NAR-B",
    nar=HubFile("chenfeng1271/NAR-imagenet-256-B", "last_version.pt",
                "Hub file listing huggingface.co/chenfeng1271/NAR-imagenet-256-B/tree/main (stored copy): "
                "last_version.pt, 522 MB, LFS, commit 55681f7 'Upload last_version.pt', pickle imports only "
                "torch.FloatStorage, torch._utils._rebuild_tensor_v2 and collections.OrderedDict (tensors only, "
                "so it loads with weights_only=True). NAR-B built here has 130.6M parameters = 522.2 MB in fp32, "
                "matching the file and the paper's 130M. The NAR README links its checkpoints to the "
                "chenfeng1271 'nar' collection on the Hub. Not yet loaded for real (no network here)."),
    raster=HubFile(LLAMAGEN, "c2i_B_256.pt",
                   f"{LLAMAGEN_README}: LlamaGen-B, 111M, 16x16 tokens, FID 5.46, linked as "
                   f".../resolve/main/c2i_B_256.pt; LlamaGen's own Space (app.py) pairs GPT-B with this file "
                   f"at 256 px. LlamaGen-B built here has 110.9M parameters."),
    raster_missing="", vq=VQ16, arch="GPT-B", **_llamagen_sampling("B", 2.0)))

_register(Preset(
    name="NAR-L",
    nar=HubFile(None, None,
                "no NAR-L ImageNet file was found: the stored Hub pages show only NAR-imagenet-256-B "
                "(chenfeng1271) and NAR-imagenet-256-XL (yefly); the NAR README points to a collection "
                "whose listing was not available. Give the file with load_preset(..., nar=(repo, file)) "
                "or --checkpoint; the architecture GPT-L (372.5M parameters, the paper's 372M) is stated."),
    raster=HubFile(LLAMAGEN, "c2i_L_256.pt",
                   f"{LLAMAGEN_README}: LlamaGen-L, 343M, 16x16 tokens, FID 3.80, linked as "
                   f".../resolve/main/c2i_L_256.pt. LlamaGen-L built here has 342.9M parameters."),
    raster_missing="", vq=VQ16, arch="GPT-L", **_llamagen_sampling("L", 2.0)))

_register(Preset(
    name="NAR-XL",
    nar=HubFile("yefly/NAR-imagenet-256-XL", None,
                "the repository exists (stored page of its README.md: commit 9bedf32 'initial commit', "
                "licence mit) but no listing of its files was found, so the weight file name is not "
                "confirmed. Give it with load_preset(..., nar=(repo, file)); architecture GPT-XL "
                "(816.0M parameters here, the paper's 816M)."),
    raster=None,
    raster_missing=("LlamaGen-XL is published only at 384 px (c2i_XL_384.pt, 24 x 24 tokens, LlamaGen "
                    "README.md); NAR-XL decodes 16 x 16, so there is no raster partner: NAR alone"),
    vq=VQ16, arch="GPT-XL", sampling_source=NAR_SAMPLING_SOURCE))


def get_preset(name: Union[str, Preset]) -> Preset:
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {str(name)[:40]!r}; choose from {', '.join(PRESETS)}") from None


@dataclass
class PresetModels:
    """What the Studio needs from a preset: the models, the sampling defaults and the class picker."""
    preset: Preset
    studio: Studio
    notes: list[str]

    def sampling(self, order: str, **overrides: Any) -> SamplingConfig:
        """The preset's sampling settings for a decoding order (raster and ZipAR use the raster's)."""
        base = self.preset.nar_sampling if order == "nar" else self.preset.raster_sampling
        return dataclasses.replace(base, **overrides).validate()

    def picker(self, order: str = "nar") -> ClassPicker:
        return ClassPicker(self.studio.model_for(order).class_names)


def load_preset(name: Union[str, Preset], *, device: Optional[Union[str, torch.device]] = None,
                dtype: Optional[torch.dtype] = None, cache_dir: Optional[str] = None,
                offline: Optional[bool] = None, nar: Optional[tuple[str, str]] = None) -> PresetModels:
    """The preset's tokenizer, NAR model and raster partner (when it has one) in one Studio.

    Every file is found first (from the Hub cache, or downloaded), so a missing one is named
    before anything loads; `nar=(repo, file)` gives a NAR file the preset could not confirm."""
    preset = get_preset(name)
    if nar is not None:
        preset = dataclasses.replace(preset, nar=HubFile(nar[0], nar[1], "given by the user"))
    if preset.missing():
        raise CheckpointError(preset.missing())
    files = {"vq": preset.vq, "nar": preset.nar}
    if preset.raster is not None:
        files["raster"] = preset.raster
    paths, problems = {}, []
    for role, hub in files.items():
        try:
            paths[role] = resolve(hub.repo, hub.file, cache_dir=cache_dir, offline=offline)
        except CheckpointError as e:
            problems.append(str(e))
    if problems:
        raise CheckpointError(f"preset {preset.name} cannot load: " + " | ".join(problems))
    dev = device if isinstance(device, torch.device) else pick_device(device)
    arch = preset.architecture()
    vq = load(paths["vq"], expect="vq", device=dev, grid_size=preset.grid_size)
    vq.source = preset.vq.name
    studio = Studio(vq)
    notes = [] if preset.raster is not None else [preset.raster_missing]
    for role in ("nar", "raster"):
        if role in paths:
            loaded = load(paths[role], expect=role, device=dev, dtype=dtype, grid_size=preset.grid_size,
                          arch=arch, fits=vq.cfg)
            studio.swap(dataclasses.replace(loaded, source=files[role].name))
    return PresetModels(preset, studio, notes)


def describe_presets() -> list[dict[str, Any]]:
    """One row per preset, for a table or the command line's --list-presets."""
    rows = []
    for p in PRESETS.values():
        rows.append({"preset": p.name, "architecture": p.arch, "grid": f"{p.grid_size}x{p.grid_size}",
                     "nar": p.nar.name if not p.missing() else " ".join(["(not confirmed)", p.nar.repo or ""]).strip(),
                     "raster": p.raster.name if p.raster else f"none: {p.raster_missing}",
                     "vq": p.vq.name, "nar_cfg": p.nar_sampling.cfg_scale,
                     "raster_cfg": p.raster_sampling.cfg_scale if p.raster else None,
                     "ready": not p.missing()})
    return rows
