"""Download a MovieLens archive from GroupLens: resumable, checksum-verified, with progress.

GroupLens publishes an ``.md5`` file beside each archive; the download is verified
against it before it is unpacked. An interrupted download resumes with an HTTP Range
request from the ``.part`` file it left.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import httpx
import pandas as pd
from tqdm import tqdm

from ml.data.errors import DownloadError

log = logging.getLogger(__name__)

DATASETS = ("ml-latest-small", "ml-25m", "ml-100k")
_CHUNK = 1 << 16


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(client: httpx.Client, url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:  # already complete
            return
        if response.status_code not in (200, 206):
            raise DownloadError(f"{url}: HTTP {response.status_code}")
        if response.status_code == 200 and have:
            log.info("server ignored the range request: starting over")
            have = 0
        total = have + int(response.headers.get("content-length", 0)) or None
        mode = "ab" if response.status_code == 206 else "wb"
        with (
            part.open(mode) as f,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.stem, disable=None) as bar,
        ):
            for block in response.iter_bytes(_CHUNK):
                f.write(block)
                bar.update(len(block))


def _download(url: str, archive: Path, part: Path, timeout: float) -> None:
    """The archive at ``url``, md5-checked, resumed from ``part`` if an earlier try left one."""
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        expected_response = client.get(url + ".md5")
        if expected_response.status_code != 200:
            raise DownloadError(f"{url}.md5: HTTP {expected_response.status_code}; cannot verify the archive")
        expected = expected_response.text.split()[0].strip().lower() if expected_response.text.strip() else ""
        if not expected or len(expected) != 32:
            raise DownloadError(f"{url}.md5: not an md5 checksum")
        if not (archive.exists() and _md5(archive) == expected):
            _fetch(client, url, part)
            actual = _md5(part)
            if actual != expected:
                part.unlink()
                raise DownloadError(f"{url}: checksum mismatch (md5 {actual}, expected {expected}); removed")
            part.replace(archive)


def download(name: str, dest: Path, base_url: str, *, timeout: float = 60.0) -> Path:
    """Fetch ``name`` into ``dest`` and return the folder in the ml-25m CSV layout."""
    if name not in DATASETS:
        raise DownloadError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    dest.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{name}.zip"
    archive = dest / f"{name}.zip"
    part = dest / f"{name}.zip.part"
    try:
        _download(url, archive, part, timeout)
    except httpx.TransportError as exc:  # no network, a refused connection, a timeout
        raise DownloadError(
            f"cannot reach {url}: {exc or type(exc).__name__}. Without network access, lay the data "
            "set out yourself (the ml-25m CSV layout) and run `cinerec data ingest DIR`"
        ) from exc
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    folder = dest / name
    if name == "ml-100k":
        convert_ml100k(folder)
    return folder


def convert_ml100k(folder: Path) -> None:
    """Write ratings.csv, movies.csv and users.csv (ml-25m layout) from ml-100k's u.data, u.item, u.user."""
    ratings = pd.read_csv(folder / "u.data", sep="\t", names=["userId", "movieId", "rating", "timestamp"])
    ratings["rating"] = ratings["rating"].astype(float)
    ratings.to_csv(folder / "ratings.csv", index=False)
    genre_names = [
        g.split("|")[0] for g in (folder / "u.genre").read_text(encoding="latin-1").splitlines() if g
    ]
    items = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1")
    flags = items.iloc[:, 5 : 5 + len(genre_names)].to_numpy()
    genres = [
        "|".join(g for g, on in zip(genre_names, row, strict=True) if on and g != "unknown")
        or "(no genres listed)"
        for row in flags
    ]
    titles = items[1].fillna("").astype(str)
    pd.DataFrame({"movieId": items[0], "title": titles, "genres": genres}).to_csv(
        folder / "movies.csv", index=False
    )
    users = pd.read_csv(folder / "u.user", sep="|", names=["userId", "age", "gender", "occupation", "zip"])
    users.to_csv(folder / "users.csv", index=False)
