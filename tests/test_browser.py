"""The app in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium; never
`playwright install`). Picks a class, generates, watches the live caption step through the
decode, uploads a small zip to the Train tab (no training is run), and screenshots each tab.

As a script it takes the README screenshots into assets/ (with the bundled checkpoints when
they exist, else with tiny random ones):

    python tests/test_browser.py [--checkpoints checkpoints] [--out assets]
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app import running_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TABS = ("generate", "compare", "model", "train")
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


def demo_upload(path: Path, size: int = 64, per_class: int = 6) -> Path:
    """A zip to show the Train tab with: a folder of stars and one of rings, and a stray text file
    (which the tab lists as skipped, with the reason)."""
    import io
    import math
    import zipfile

    from PIL import Image, ImageDraw

    def star(i: int) -> Image.Image:
        img = Image.new("RGB", (size, size), "white")
        cx, cy, r = size / 2 + (i % 3 - 1) * 4, size / 2 + (i % 2) * 3, size * (0.36 + 0.02 * (i % 3))
        points = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(math.pi * k / 5 + i * 0.1),
                   cy - (r if k % 2 == 0 else r * 0.45) * math.cos(math.pi * k / 5 + i * 0.1)) for k in range(10)]
        ImageDraw.Draw(img).polygon(points, fill=(250, 190 + 8 * (i % 4), 20), outline=(190, 120, 0))
        return img

    def ring(i: int) -> Image.Image:
        img = Image.new("RGB", (size, size), "white")
        r, c = size * (0.3 + 0.03 * (i % 3)), size / 2 + (i % 3 - 1) * 3
        ImageDraw.Draw(img).ellipse((c - r, c - r, c + r, c + r), outline=(30, 90 + 20 * (i % 4), 220),
                                    width=max(2, size // 9))
        return img

    with zipfile.ZipFile(path, "w") as z:
        for name, draw in (("star", star), ("ring", ring)):
            for i in range(per_class):
                buf = io.BytesIO()
                draw(i).save(buf, format="PNG")
                z.writestr(f"{name}/{name}-{i}.png", buf.getvalue())
        z.writestr("star/notes.txt", "drawn for the screenshot\n")
    return path


def browse(url: str, shots: Path, class_name: str, seconds_per_frame: float, timeout_ms: int = 120_000,
           train_steps: int = 0) -> dict:
    """Drive the four tabs (with a fine-tuning run of `train_steps` steps, if any); returns what was
    observed. Screenshots go to `shots`."""
    from playwright.sync_api import sync_playwright
    shots.mkdir(parents=True, exist_ok=True)
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page.goto(url, wait_until="load", timeout=timeout_ms)   # (never network-idle: the state heartbeat)
            page.wait_for_selector("#gen-button", timeout=timeout_ms)
            page.wait_for_timeout(1500)                             # the page-load events
            # pick the class from the dropdown
            page.get_by_label("Class").first.click()
            page.get_by_role("option", name=class_name, exact=True).click()
            seen["class"] = page.get_by_label("Class").first.input_value()
            # replay the decode slowly afterwards, so every step stays on screen for a moment
            pace = page.get_by_label("number input for Replay: seconds per step")
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

            page.get_by_role("tab", name="Train").click()
            with tempfile.TemporaryDirectory() as folder:  # the browser reads the file after this call
                upload = demo_upload(Path(folder) / "shapes.zip")
                page.locator("#train-files input[type=file]").set_input_files(str(upload))
                page.wait_for_function("document.querySelector('#scan-summary').innerText.includes('Found')",
                                       timeout=timeout_ms)
            page.wait_for_selector("#scan-thumbs img", timeout=timeout_ms)
            page.wait_for_timeout(800)
            seen["scan"] = page.locator("#scan-summary").inner_text()
            seen["skipped"] = page.locator("#scan-skipped").inner_text()
            seen["limits"] = page.locator("#train-limits").inner_text()
            if train_steps:  # a short run: the loss curve, the progress bar and the samples fill in
                for box, value in ((page.get_by_label("number input for Steps"), train_steps),
                                   (page.get_by_label("number input for Batch size"), 8),
                                   (page.locator("#train-every input"), max(1, train_steps // 4)),
                                   (page.locator("#train-lr input"), 0.003)):
                    box.fill(str(value))
                    box.press("Enter")
                page.get_by_role("button", name="Start training", exact=True).click()
                page.wait_for_function("document.querySelector('#train-status').innerText.includes('Training')",
                                       timeout=timeout_ms)
                seen["training"] = page.locator("#train-bar").inner_text()
                page.wait_for_function("document.querySelector('#train-status').innerText.includes('Finished')",
                                       timeout=timeout_ms)
                page.wait_for_selector("#train-preview img", timeout=timeout_ms)
                page.wait_for_selector("#train-weights a", timeout=timeout_ms)
                page.wait_for_timeout(1000)
                seen["train_status"] = page.locator("#train-status").inner_text()
                seen["weights"] = page.locator("#train-weights").inner_text()
                seen["loss_plot"] = page.locator("#loss-plot canvas, #loss-plot svg").count()
            page.screenshot(path=str(shots / "screenshot_train.png"), full_page=True)
        finally:
            browser.close()
    return seen


OVERFLOW = "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth"
NO_ERROR = "() => !/\\bError\\b/.test(document.body.innerText)"
# every visible table sits in a box that scrolls sideways and ends inside the screen; how much
# wider than its box the widest table is
TABLES = """() => { let wider = 0; const bad = [];
  for (const t of document.querySelectorAll('table')) {
    if (t.offsetParent === null) continue;
    let box = t.parentElement;
    while (box && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
    if (!box || box.getBoundingClientRect().right > window.innerWidth + 0.5) { bad.push(t.className); continue; }
    wider = Math.max(wider, box.scrollWidth - box.clientWidth);
  }
  return {bad, wider}; }"""
# the file name shown for the GIF (Gradio shows its stem, cut with an ellipsis when too narrow,
# beside its extension), and whether the stem is cut
FILE_NAME = """() => { const cell = document.querySelector('#gen-gif td.filename'), stem = cell.querySelector('.stem');
  return {name: cell.innerText.replace(/\\s+/g, ''), cut: stem.scrollWidth > stem.clientWidth + 1}; }"""
# the focused control: its kind and whether a ring shows: an outline, or a box shadow another
# control of its kind (not focused) does not have
FOCUS = """() => { const a = document.activeElement, cs = getComputedStyle(a);
  const other = [...document.querySelectorAll(`input[type=${a.type}]`)].find(e => e !== a && e.offsetParent);
  const shadow = cs.boxShadow !== 'none' && (!other || getComputedStyle(other).boxShadow !== cs.boxShadow);
  return {type: a.type || a.tagName, ring: (cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2)
          || shadow}; }"""


def focus_rings(page, kinds=("range", "radio"), presses: int = 60) -> dict:
    """Tab through the Generate tab from the top; the first control of each kind that gets the
    keyboard's focus, and whether it shows a ring."""
    page.locator("#title").click()
    found = {}
    for _ in range(presses):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUS)
        if focused["type"] in kinds and focused["type"] not in found:
            found[focused["type"]] = focused["ring"]
        if len(found) == len(kinds):
            break
    return found


# records every text the Video tab's caption shows and every picture its live view gets
WATCH_VIDEO = WATCH.replace("__captions", "__video_captions").replace("__frames", "__video_frames") \
    .replace("#gen-caption", "#video-caption").replace("#live", "#video-live")


def scrub_to(page, scrub: str, caption: str, step: int, num_steps: int, timeout_ms: int) -> str:
    """Type a step into a scrub box; the caption's text once it shows that step."""
    box = page.locator(f"#{scrub} input[type=number]")
    box.fill(str(step))
    box.press("Enter")
    page.wait_for_function(f"document.querySelector('#{caption}').innerText.includes('step {step}/{num_steps}')",
                           timeout=timeout_ms)
    return page.locator(f"#{caption}").inner_text()


def video_session(page, timeout_ms: int) -> dict:
    """The Video tab: a NAR clip decodes live (the caption steps through the planes), comes as a
    GIF and an MP4, a kept step is shown again, then the NAR vs raster race fills its table."""
    seen = {}
    page.get_by_role("tab", name="Video").click()
    page.wait_for_selector("#video-button", timeout=timeout_ms)
    page.get_by_label("Motion").first.click()
    page.get_by_role("option", name="zoom_in", exact=True).click()
    page.evaluate(WATCH_VIDEO)
    page.locator("#video-button").click()                      # NAR, the default order
    page.wait_for_function("document.querySelector('#video-caption').innerText.includes('done')",
                           timeout=timeout_ms)
    page.wait_for_selector("#video-mp4 a", timeout=timeout_ms)   # the files close the event
    page.wait_for_selector("#video-gif img", timeout=timeout_ms)
    seen["captions"] = page.evaluate("window.__video_captions")
    seen["frames"] = page.evaluate("window.__video_frames.size")
    seen["caption"] = page.locator("#video-caption").inner_text()
    seen["mp4"] = page.locator("#video-mp4").inner_text()
    seen["scrub"] = scrub_to(page, "video-scrub", "video-caption", 5, 18, timeout_ms)
    page.locator("#video-race").click()
    page.wait_for_function("document.querySelector('#video-caption-raster').innerText.includes('done')",
                           timeout=timeout_ms)
    page.wait_for_timeout(800)
    seen["race"] = {o: page.locator(f"#video-caption-{o}").inner_text() for o in ("raster", "nar")}
    seen["table"] = page.locator("#video-race-table").inner_text()
    seen["no_error"] = page.evaluate(NO_ERROR)
    return seen


def live_view_session(url: str, width: int, height: int, timeout_ms: int = 120_000) -> dict:
    """On the bundled models: generate, stop a raster decode mid-way, scrub the stopped result with
    the confidence overlay, restore a history item's parameters, send the other to Compare; the
    keyboard's focus ring, the page's overflow in every tab before and after, its tables and file
    names. Returns what was seen."""
    from playwright.sync_api import sync_playwright
    seen = {"overflow": {}, "tables": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.goto(url, wait_until="load", timeout=timeout_ms)   # (never network-idle: the state heartbeat)
            page.wait_for_selector("#gen-button", timeout=timeout_ms)
            page.wait_for_timeout(1500)                             # the page-load events

            def overflow(when: str) -> None:
                for name in ("Compare", "Model", "Train", "Generate"):
                    page.get_by_role("tab", name=name).click()
                    page.wait_for_timeout(300)
                    seen["overflow"][f"{name} {when}"] = page.evaluate(OVERFLOW)
                    seen["tables"][f"{name} {when}"] = page.evaluate(TABLES)
            overflow("before")
            seen["focus"] = focus_rings(page)
            seen["class_info"] = page.locator("#component-0, .gradio-container").first.inner_text()
            page.locator("#gen-button").click()                       # NAR, the default
            page.wait_for_function("document.querySelector('#gen-caption').innerText.includes('done')",
                                   timeout=timeout_ms)
            page.wait_for_selector("#gen-gif a", timeout=timeout_ms)   # the files close the event
            seen["file_name"] = page.evaluate(FILE_NAME)
            page.locator("#gen-order").get_by_text("Raster", exact=True).click()
            images = page.get_by_label("number input for Number of images")
            images.fill("8")                                           # 8 raster images: several seconds
            images.press("Enter")
            seed = page.locator("#seed-row input[type=number]")
            seed.fill("5")
            seed.press("Enter")
            page.locator("#gen-button").click()
            # Stop while it decodes: the live view holds its first frame back (it never slows the
            # decoder), so a fast machine can finish before that frame; press Stop once it runs.
            # Pressed while the request still waits in the queue, Stop ends it before it begins
            # (no frames, no files): then generate again and press Stop once more.
            for _ in range(100):
                page.wait_for_timeout(200)
                page.locator("#gen-stop").click()
                page.wait_for_timeout(300)
                note = page.locator("#gen-stop-note").inner_text()
                if "stopping 1 decode" in note:
                    break
                if "will not run" in note:
                    page.wait_for_function("document.querySelector('#gen-caption').innerText"
                                           ".includes('stopped before it began')", timeout=timeout_ms)
                    page.locator("#gen-button").click()
            page.wait_for_function("document.querySelector('#gen-caption').innerText.includes('stopped')",
                                   timeout=timeout_ms)
            page.wait_for_selector("#gen-gif a", timeout=timeout_ms)  # the partial animation is offered
            page.wait_for_timeout(1000)
            seen["stopped"] = page.locator("#gen-caption").inner_text()
            seen["no_error"] = page.evaluate(NO_ERROR)
            seen["gif"] = page.locator("#gen-gif").inner_text()
            # scrub: step 3 of the stopped decode, then the overlay
            scrub_to(page, "scrub", "gen-caption", 3, 256, timeout_ms)
            page.locator("#overlay input").check()
            page.wait_for_function("document.querySelector('#gen-caption').innerText.includes('probability')",
                                   timeout=timeout_ms)
            seen["scrub"] = page.locator("#gen-caption").inner_text()
            seen["live_alt"] = page.locator("#live img").first.get_attribute("alt")
            # the history: two results; pick the NAR one (the second) and restore its parameters
            seen["history"] = page.locator("#history-gallery img").count()
            thumbs = [page.locator("#history-gallery img").nth(i).bounding_box() for i in range(2)]
            seen["thumbs_in_a_row"] = thumbs[0]["y"] == thumbs[1]["y"] and thumbs[0]["width"] <= 140
            page.locator("#history-gallery img").nth(1).click()
            page.locator("#restore").click()
            page.wait_for_function("document.querySelector('#gen-order input[value=nar]').checked", timeout=timeout_ms)
            seen["restored"] = True
            seen["share"] = page.locator("#share-link").inner_text()
            # the stopped raster one (seed 5) to Compare: its tab opens with that seed
            page.locator("#history-gallery img").nth(0).click()
            page.locator("#to-compare").click()
            page.wait_for_function("document.querySelector('#cmp-seed-row input[type=number]').value === '5'",
                                   timeout=timeout_ms)
            seen["sent"] = page.get_by_role("tab", name="Compare").get_attribute("aria-selected")
            seen["no_error_end"] = page.evaluate(NO_ERROR)
            if width < 500:
                page.screenshot(path=str(Path(os.environ.get("NAR_SHOTS", tempfile.gettempdir())) /
                                         "screenshot_phone.png"), full_page=True)
            else:
                seen["video"] = video_session(page, timeout_ms)
            overflow("after")
        finally:
            browser.close()
    return seen


# Outside CI a machine without chromium skips this test; CI (.ci/run installs chromium) never does.
@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_live_view_stop_scrub_and_history_on_desktop_and_phone(tmp_path, monkeypatch):
    monkeypatch.setenv("NAR_STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    with running_app(ROOT / "checkpoints") as url:
        for width, height in ((1280, 900), (390, 844)):
            seen = live_view_session(url, width, height)
            assert re.search(r"Raster · stopped at step \d+/256 - [0-9.]+ s", seen["stopped"]), seen
            assert seen["no_error"] and seen["no_error_end"], seen
            assert ".gif" in seen["gif"]
            assert "step 3/256" in seen["scrub"] and "probability" in seen["scrub"]
            assert seen["live_alt"] and "decoded" in seen["live_alt"]
            assert seen["history"] >= 2 and seen["restored"] and "Link to these parameters" in seen["share"]
            assert seen["thumbs_in_a_row"], "the history shows small thumbnails side by side"
            assert seen["sent"] == "true"                       # Send to Compare: its tab, the result's seed
            assert seen["focus"] == {"range": True, "radio": True}, seen["focus"]
            assert seen["file_name"] == {"name": "nar-decoding.gif", "cut": False}, seen["file_name"]
            # no tab wider than the screen, before or after a run; tables scroll inside their own box
            wide = {k: v for k, v in seen["overflow"].items() if v > 0}
            assert not wide, (width, seen["overflow"])
            assert not any(t["bad"] for t in seen["tables"].values()), seen["tables"]
            if width < 500:   # the Compare table is wider than a phone: it scrolls, the page does not
                assert seen["tables"]["Compare before"]["wider"] > 0, seen["tables"]
            else:             # the Video tab: live planes, the clip's files, a kept step, the race
                video = seen["video"]
                steps = {int(m.group(1)) for c in video["captions"] for m in [re.search(r"step (\d+)/18", c)] if m}
                assert steps and max(steps) < 18, video["captions"]      # intermediate planes were shown
                assert "NAR · done: 18 steps" in video["caption"] and "4 x 8 x 8 tokens" in video["caption"], video
                assert video["frames"] >= 2 and ".mp4" in video["mp4"], video
                assert video["scrub"].startswith("step 5/18"), video["scrub"]
                assert "done: 256 steps" in video["race"]["raster"] and "done: 18 steps" in video["race"]["nar"], video
                assert "256" in video["table"] and "18" in video["table"] and video["no_error"], video


# Outside CI a machine without chromium skips this test; CI (.ci/run installs chromium) never does.
@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_generate_in_the_browser(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("NAR_STUDIO_RUNS_DIR", str(tmp_path / "runs"))   # the app's --runs-dir default
    with running_app(tiny_checkpoints["vq"].parent) as url:
        seen = browse(url, tmp_path / "shots", "dog", seconds_per_frame=0.25, train_steps=24)
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
    assert "12 images" in seen["scan"] and "2 classes" in seen["scan"] and "1 file skipped" in seen["scan"]
    assert "notes.txt" in seen["skipped"] and "not a PNG" in seen["skipped"]
    assert "4096x4096 pixels per image" in seen["limits"]
    # the short run streamed its progress, finished, drew its loss curve and offered its weights
    assert "step" in seen["training"] and "Finished" in seen["train_status"] and "24 steps" in seen["train_status"]
    assert seen["loss_plot"] >= 1 and "step24" in seen["weights"] and "resumable" in seen["weights"]
    assert list((tmp_path / "runs").iterdir())          # the run lives in the runs folder given
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
    p.add_argument("--train-steps", type=int, default=40, help="steps of the fine-tuning run in the Train tab "
                                                                "screenshot (0: only upload)")
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
    os.environ["NAR_STUDIO_RUNS_DIR"] = tempfile.mkdtemp(prefix="nar-screenshot-runs-")  # not the real runs
    with running_app(folder, threads=None) as url:
        seen = browse(url, args.out, class_name, args.seconds_per_frame, train_steps=args.train_steps)
    print({k: v for k, v in seen.items() if k in ("race", "compare", "frames", "gallery")})
    for name in (*TABS, "decoding", "compare_race"):
        print(args.out / f"screenshot_{name}.png")


if __name__ == "__main__":
    main()
