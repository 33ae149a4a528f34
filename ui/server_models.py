"""The server's model sets by name: the bundled checkpoints ("bundled") or a preset of the
official models (nar/presets.py), as ui.sessions.SharedModels; the admin's login; the preset table
the Model tab shows."""
from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Callable, Optional

from nar.presets import PRESETS, get_preset, load_preset

from .service import BUNDLED, BUNDLED_TEXT, folder_models
from .sessions import SharedModels

ADMIN_ENV = "NAR_STUDIO_ADMIN"          # user:password of the one who may replace the server's models


def preset_models(name: str, device: Optional[str] = None) -> SharedModels:
    """A preset's models from the Hub cache (downloaded when missing, unless HF_HUB_OFFLINE=1)."""
    loaded = load_preset(name, device=device)
    sampling = {"nar": loaded.sampling("nar")}
    if loaded.studio.models.get("raster") is not None:
        sampling["raster"] = sampling["zipar"] = loaded.sampling("raster")
    return SharedModels(loaded.preset.name, loaded.studio, lambda: preset_models(name, device), sampling,
                        list(loaded.notes), loaded.preset)


def shared_loader(name: str, folder: Optional[Path], device: Optional[str]) -> Callable[[], SharedModels]:
    """What builds the model set `name` ("bundled" or a preset name); ValueError for an unknown name."""
    name = str(name or "").strip()
    if name in (BUNDLED, BUNDLED_TEXT):
        if folder is None:
            raise ValueError(f"the server was started without a checkpoint folder, so {name!r} is not available")
        return lambda: folder_models(folder, device, name)
    get_preset(name)          # an unknown name is refused here, before anything is released
    return lambda: preset_models(name, device)


def parse_names(text: str) -> list[str]:
    names = [n.strip() for n in str(text or "").replace("\n", ",").split(",") if n.strip()]
    if not names:
        raise ValueError(f"name the model sets: '{BUNDLED}' or presets ({', '.join(PRESETS)}), comma-separated")
    if len(names) > 4:
        raise ValueError("the server holds at most 4 model sets")
    return list(dict.fromkeys(names))


# -- the admin --------------------------------------------------------------------------------
def admin_credentials(text: Optional[str] = None) -> Optional[tuple[str, str]]:
    """(user, password) from NAR_STUDIO_ADMIN, or None when no admin is set."""
    text = os.environ.get(ADMIN_ENV, "") if text is None else text
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        return None
    return user.strip(), password


def is_admin(user, password, credentials: Optional[tuple[str, str]]) -> bool:
    """Constant-time check of a login against the admin's."""
    if credentials is None:
        return False
    good_user = hmac.compare_digest(str(user or "").strip().encode(), credentials[0].encode())
    good_password = hmac.compare_digest(str(password or "").encode(), credentials[1].encode())
    return good_user and good_password


# -- the preset table -------------------------------------------------------------------------
def preset_markdown(name: str) -> str:
    """What the Model tab says about a preset: its files and what was confirmed about each, the
    architecture, the raster partner (or why there is none) and the sampling defaults."""
    if name == BUNDLED:
        return "**bundled**: the checkpoints the app ships with (see README, Bundled checkpoints)."
    if name == BUNDLED_TEXT:
        return ("**bundled-text**: the bundled text-to-image models (NAR and raster) with their text encoder: "
                "type a prompt such as \"cat face\" or \"flag: Japan\", in 15 languages (see README, Text to image).")
    try:
        p = get_preset(name)
    except ValueError as e:
        return str(e)
    arch = p.architecture()
    lines = [f"**{p.name}**: architecture {p.arch} ({arch['n_layer']} layers, dim {arch['dim']}, "
             f"{arch['n_head']} heads, stated), {p.grid_size}×{p.grid_size} tokens, {p.num_classes} ImageNet "
             f"classes.",
             f"- NAR model: `{p.nar.name if not p.missing() else '(not confirmed)'}`: {p.nar.confirmed}"]
    if p.raster is not None:
        lines.append(f"- Raster partner (raster and ZipAR): `{p.raster.name}`: {p.raster.confirmed}")
    else:
        lines.append(f"- No raster partner: {p.raster_missing}")
    lines.append(f"- Tokenizer: `{p.vq.name}`: {p.vq.confirmed}")
    s = p.nar_sampling
    lines.append(f"- Sampling defaults: NAR CFG {s.cfg_scale}, top-k {s.top_k or 'off'}, top-p {s.top_p}, "
                 f"temperature {s.temperature}" +
                 (f"; raster CFG {p.raster_sampling.cfg_scale}" if p.raster is not None else "") +
                 (f" ({p.sampling_source})" if p.sampling_source else ""))
    if p.missing():
        lines.append(f"- **Cannot load as it stands**: {p.missing()}")
    return "\n".join(lines)
