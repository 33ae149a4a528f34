"""Files from the Hugging Face Hub, answering fast when they cannot be had.

huggingface_hub, asked for a file it has not cached while the Hub is unreachable, retries with
back-off for about 25 s before it gives up. Here the local cache is tried first; a file that is
not there is looked up once on the Hub, without retries and with a short timeout, before the
download proper starts. So with no network, or with HF_HUB_OFFLINE=1, the answer comes within
seconds and says what is missing and how to get it.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

PROBE_TIMEOUT_S = 3.0   # HF_HUB_ETAG_TIMEOUT, when set, takes its place


class HubError(ValueError):
    """A Hub file that cannot be had, with what to do about it."""


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def missing_message(repo_id: str, filename: str, why: str) -> str:
    return (f"{repo_id}/{filename} is not in the local Hugging Face cache and {why}. Run "
            f"`hf download {repo_id} {filename}` on a machine with network access (and copy its cache "
            f"here), set HF_HOME to a cache that holds it, or give a local path")


def probe_timeout() -> float:
    try:
        return float(os.environ["HF_HUB_ETAG_TIMEOUT"])
    except (KeyError, ValueError):
        return PROBE_TIMEOUT_S


def probe(repo_id: str, filename: str, revision: Optional[str], timeout: float) -> None:
    """One HEAD of the file, without retries; raises what it raises, or TimeoutError when the Hub has
    not answered within `timeout` (huggingface_hub may send requests of its own first, e.g. while
    building its request headers, so the deadline is kept here, not left to each request's timeout)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    outcome: dict = {}

    def ask():
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), timeout=timeout,
                                 retry_on_errors=False)
        except BaseException as e:   # handed to the caller's thread
            outcome["error"] = e
    worker = threading.Thread(target=ask, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]


def hub_file(repo_id: str, filename: str, *, cache_dir: Optional[str] = None,
             revision: Optional[str] = None, offline: Optional[bool] = None) -> Path:
    """The local path of a Hub file: from the cache, else downloaded once the Hub has answered."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    offline = offline_mode() if offline is None else offline
    try:   # a pure file-system look-up: hf_hub_download may ask the Hub for other things first
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    except (OSError, ValueError) as e:   # an unreadable cache folder
        raise HubError(f"the Hugging Face cache could not be read for {repo_id}/{filename} ({e})") from e
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    if offline:
        raise HubError(missing_message(repo_id, filename, "offline mode is on (HF_HUB_OFFLINE=1)"))
    try:
        probe(repo_id, filename, revision, probe_timeout())
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, revision=revision))
    except GatedRepoError as e:
        raise HubError(f"Hub repository {repo_id!r} is gated: accept its terms on the Hub and log in "
                       f"(`hf auth login`) first") from e
    except RepositoryNotFoundError as e:
        raise HubError(f"Hub repository {repo_id!r} does not exist or is private") from e
    except RevisionNotFoundError as e:
        raise HubError(f"revision {revision!r} does not exist in Hub repository {repo_id!r}") from e
    except EntryNotFoundError as e:
        raise HubError(f"{filename!r} is not a file of Hub repository {repo_id!r}") from e
    except HfHubHTTPError as e:
        raise HubError(f"could not fetch {repo_id}/{filename} from the Hub ({str(e).splitlines()[0]})") from e
    except Exception as e:
        # Network errors and timeouts: their classes come from the HTTP library huggingface_hub
        # uses, which has changed between its versions (requests, httpx, httpx2), so no common
        # base class can be named here.
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise HubError(missing_message(repo_id, filename, f"the Hub could not be reached ({reason})")) from e
