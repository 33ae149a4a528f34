"""The app in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium; never
`playwright install`). Picks a class, generates, watches the live caption step through the
decode, and screenshots each tab.

As a script it takes the README screenshots into assets/ (with the bundled checkpoints when
they exist, else with tiny random ones):

    python tests/test_browser.py [--checkpoints checkpoints] [--out assets]
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app import running_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TABS = ("generate", "compare", "model")
# true once a caption shows "step k/N" with k at least half of N
HALF_WAY = """() => {{ const m = document.querySelector('#{id}').innerText.match(/step (\\d+)\\/(\\d+)/);
  return m !== null && 2 * Number(m[1]) >= Number(m[2]); }}"""

# records every text the live caption shows and every picture the live view gets
WATCH = """() => {
  window.__captions = []; window.__frames = new Set();
  const caption = document.querySelector('#gen-caption');
  new MutationObserver(() => window.__captions.push(caption.innerText.trim()))
    .observe(caption, {subtree: true, childList: true, characterData: true});
  const live = document.querySelector('#live');
  new MutationObserver(() => live.querySelectorAll('img').forEach(i => window.__frames.add(i.src)))
    .observe(live, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def browse(url: str, shots: Path, class_name: str, seconds_per_frame: float, timeout_ms: int = 120_000) -> dict:
    """Drive the three tabs; returns what was observed. Screenshots go to `shots`."""
    from playwright.sync_api import sync_playwright
    shots.mkdir(parents=True, exist_ok=True)
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page.goto(url, wait_until="networkidle", timeout=timeout_ms)
            # pick the class from the dropdown
            page.get_by_label("Class").first.click()
            page.get_by_role("option", name=class_name, exact=True).click()
            seen["class"] = page.get_by_label("Class").first.input_value()
            # slow the playback so every step stays on screen for a moment
            pace = page.get_by_label("number input for Playback: minimum seconds per frame")
            pace.fill(str(seconds_per_frame))
            pace.press("Enter")
            page.evaluate(WATCH)
            page.get_by_role("button", name="Generate", exact=True).click()
            page.wait_for_function(HALF_WAY.format(id="gen-caption"), timeout=timeout_ms)
            page.screenshot(path=str(shots / "screenshot_decoding.png"))
            page.wait_for_selector("#final-gallery img", timeout=timeout_ms)
            page.wait_for_function("document.querySelector('#gen-caption').innerText.includes('done')",
                                   timeout=timeout_ms)
            page.wait_for_timeout(500)
            seen["captions"] = page.evaluate("window.__captions")
            seen["frames"] = page.evaluate("window.__frames.size")
            seen["gallery"] = page.locator("#final-gallery img").count()
            seen["downloads"] = [page.locator(s).inner_text() for s in ("#gen-gif", "#gen-mp4")]
            page.screenshot(path=str(shots / "screenshot_generate.png"), full_page=True)

            page.get_by_role("tab", name="Compare").click()
            page.get_by_label("Class").nth(1).click()
            page.get_by_role("option", name=class_name, exact=True).click()
            page.get_by_role("button", name="Compare", exact=True).click()
            page.wait_for_function("document.querySelector('#caption-nar').innerText.includes('done')",
                                   timeout=timeout_ms)
            seen["race"] = {o: page.locator(f"#caption-{o}").inner_text() for o in ("raster", "zipar", "nar")}
            page.screenshot(path=str(shots / "screenshot_compare_race.png"))
            page.wait_for_function("document.querySelector('#caption-raster').innerText.includes('done')",
                                   timeout=timeout_ms)
            page.wait_for_timeout(800)
            seen["compare"] = {o: page.locator(f"#caption-{o}").inner_text() for o in ("raster", "zipar", "nar")}
            seen["table"] = page.locator("#compare-table").inner_text()
            page.screenshot(path=str(shots / "screenshot_compare.png"), full_page=True)

            page.get_by_role("tab", name="Model").click()
            page.wait_for_selector("#model-table", timeout=timeout_ms)
            page.wait_for_timeout(500)
            seen["model"] = page.locator("#model-table").inner_text()
            page.screenshot(path=str(shots / "screenshot_model.png"), full_page=True)
        finally:
            browser.close()
    return seen


# Outside CI a machine without chromium skips this test; CI (.ci/run installs chromium) never does.
@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_generate_in_the_browser(tiny_checkpoints, tmp_path):
    with running_app(tiny_checkpoints["vq"].parent) as url:
        seen = browse(url, tmp_path / "shots", "dog", seconds_per_frame=0.25)
    assert seen["class"] == "dog"
    # intermediate frames were shown: the caption stepped through "step k/7" before "done"
    steps = {int(m.group(1)) for c in seen["captions"] for m in [re.search(r"step (\d+)/7", c)] if m}
    assert len(steps) >= 3 and max(steps) < 7, seen["captions"]
    assert any("done: 7 steps" in c for c in seen["captions"])
    assert seen["frames"] >= 4                      # the live picture changed with the steps
    assert seen["gallery"] == 1
    assert any(".gif" in d for d in seen["downloads"]) and any(".mp4" in d for d in seen["downloads"])
    assert all("done" in c for c in seen["compare"].values())
    assert "NAR" in seen["table"] and "Raster" in seen["table"] and "ZipAR" in seen["table"]
    assert "NAR model" in seen["model"] and "4x4" in seen["model"] and "float32" in seen["model"]
    for tab in TABS:
        shot = tmp_path / "shots" / f"screenshot_{tab}.png"
        assert shot.stat().st_size > 10_000


def main(argv=None) -> None:
    import argparse
    import tempfile
    p = argparse.ArgumentParser(description="Take the README screenshots of the app.")
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    p.add_argument("--out", type=Path, default=ROOT / "assets")
    p.add_argument("--class-name", default=None, help="class to generate (default: the model's first)")
    p.add_argument("--seconds-per-frame", type=float, default=0.1)
    args = p.parse_args(argv)
    folder = args.checkpoints
    if not all((folder / f"{k}.safetensors").is_file() for k in ("nar", "raster", "vq")):
        from conftest import write_tiny_checkpoints
        folder = Path(tempfile.mkdtemp()) / "tiny"
        write_tiny_checkpoints(folder)
        print(f"{args.checkpoints} lacks the checkpoints: using tiny random ones", file=sys.stderr)
    class_name = args.class_name
    if class_name is None:
        from nar.checkpoint import class_names_of, read_checkpoint
        class_name = class_names_of(read_checkpoint(folder / "nar.safetensors"))[0]
    with running_app(folder, threads=None) as url:
        seen = browse(url, args.out, class_name, args.seconds_per_frame)
    print({k: v for k, v in seen.items() if k in ("race", "compare", "frames", "gallery")})
    for name in (*TABS, "decoding", "compare_race"):
        print(args.out / f"screenshot_{name}.png")


if __name__ == "__main__":
    main()
