"""reports/reliability.json -> the Markdown table of the README's Reliability section."""
from __future__ import annotations


def markdown(r: dict) -> str:
    rows = [("Check", "Tried", "Result")]
    load = r.get("load")
    if load:
        rss = load["rss_mb"]
        lim = load["limits_mb"]
        rows.append(("Load: concurrent `generate` requests (gradio_client)",
                     f"{load['waves']} waves x {load['clients']} clients = {load['requests']} requests, "
                     f"{load['server_slots']} decode slots",
                     f"{load['errors']} errors, {load['requests'] - load['mismatches']}/{load['requests']} images "
                     f"identical to single-user runs; latency (queue wait included) p50 {load['latency_p50_s']} s, "
                     f"max {load['latency_max_s']} s; waves took {' and '.join(f'{w} s' for w in load['wave_s'])}"))
        rows.append(("Memory (server RSS, /proc VmRSS)",
                     f"warm baseline {rss['baseline']} MB",
                     f"after wave 1 {rss['after_wave1']} MB (+{rss['after_wave1'] - rss['baseline']}, limit "
                     f"+{lim['wave1_growth']}); after wave 2 {rss['after_wave2']} MB "
                     f"({rss['after_wave2'] - rss['after_wave1']:+}, limit +{lim['wave2_growth']}); peak {rss['peak']} MB"))
    training = r.get("generate_while_training")
    if training:
        rows.append(("Generate while a fine-tuning job trains", f"{training['requests']} requests",
                     f"{training['errors']} errors, {training['identical']}/{training['requests']} images identical "
                     f"to the runs without training; training went on ({training['steps_meanwhile']} steps meanwhile)"))
    freed = r.get("freed")
    if freed:
        rows.append(("Cancelled request and disconnected client",
                     f"{freed['cancelled']} cancelled + {freed['disconnected']} dropped mid-decode "
                     f"({freed['of_steps']} steps, {freed['slow_request_s']} s each)",
                     f"both decodes stopped (at steps {', '.join(map(str, freed['stopped_at']))} of {freed['of_steps']}); "
                     f"the next 2 requests were served in {freed['next_requests_served_s']} s"))
    kill = (r.get("faults") or {}).get("kill")
    if kill:
        rows.append(("Server killed (SIGKILL) while fine-tuning",
                     f"killed mid-run (progress last seen at step {kill['last_seen_step']} of "
                     f"{kill['target_steps']})",
                     f"every file complete (last.safetensors at step {kill['checkpoint_step']}); the kill left "
                     f"{kill.get('partial_files_left_by_the_kill', 0)} partial write(s), and one more was planted as a "
                     f"kill during a write leaves it: the restart removed them, offered the run as interrupted, "
                     f"and Resume finished it at step {kill['finished_at_step']}"))
    disk = (r.get("faults") or {}).get("full_disk")
    if disk:
        rows.append(("Checkpoint write fails (disk full, simulated)",
                     f"write {disk['failed_write']} of a run fails half-way with ENOSPC",
                     f"run reported failed with the reason; last.safetensors kept at step {disk['kept_step']}, no "
                     f"partial file; resumed to step {disk['finished_at_step']}"))
    hostile = r.get("hostile")
    if hostile:
        for kind, v in hostile["kinds"].items():
            slowest = (f"; slowest {v['slowest_s']} s (bound {v['bound_s']} s)" if "slowest_s" in v else "")
            rows.append((f"Hostile input: {kind}", str(v["tried"]),
                         f"{v['refused']}/{v['tried']} refused with a clear message{slowest}"))
        rows.append(("Hostile input: all kinds", str(hostile["tried"]),
                     f"{hostile['refused_with_message']}/{hostile['tried']} refused; a bystander's decode and the "
                     f"next request gave identical images; RSS {hostile['rss_growth_mb']:+} MB"))
    uploads = r.get("uploads")
    if uploads:
        rows.append(("Costly and rotated uploads", f"a zip of {uploads['bomb_images']} solid 4096x4096 PNGs "
                     f"({uploads['bomb_bytes'] // 1000} KB); a phone photo with an EXIF rotation",
                     f"scanned in {uploads['first_scan_s']} s, again in {uploads['second_scan_s']} s (from the scan "
                     f"cache); the photo is previewed and trained upright; the next request gave identical images"))
    exposure = r.get("exposure")
    if exposure:
        rows.append(("Exposure", "default start; start with NAR_STUDIO_AUTH",
                     f"listens on {', '.join(exposure['default_bind'])} only; without a login the config, API, "
                     f"queue and file routes answer {'/'.join(map(str, exposure['without_login']))}; with it the "
                     f"API serves"))
    lines = [f"| {' | '.join(rows[0])} |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows[1:]]
    return "\n".join(lines) + "\n"
