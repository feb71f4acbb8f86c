"""`cinerec data download` against a local HTTP server that serves a zip the test builds."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ml.data.download import DownloadError, download


class _Files(BaseHTTPRequestHandler):
    """Serves ``files`` with Range support, like GroupLens' server; counts bytes sent."""

    files: dict[str, bytes] = {}
    sent = 0
    ranges: list[str] = []

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if header := self.headers.get("Range"):
            type(self).ranges.append(header)
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        # counted before writing: the client may finish reading (and the test assert) before
        # this thread runs another line
        if self.path.endswith(".zip"):
            type(self).sent += len(body) - start
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/datasets"
    httpd.shutdown()
    httpd.server_close()


def _archive(tmp_path: Path) -> bytes:
    path = tmp_path / "src.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ml-latest-small/movies.csv", "movieId,title,genres\n1,Toy Story (1995),Animation\n")
        z.writestr(
            "ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n" * 2000
        )
    return path.read_bytes()


def _serve(body: bytes, md5: str | None = None) -> None:
    _Files.files = {
        "/datasets/ml-latest-small.zip": body,
        "/datasets/ml-latest-small.zip.md5": f"{md5 or hashlib.md5(body).hexdigest()}  ml-latest-small.zip\n".encode(),
    }
    _Files.sent = 0
    _Files.ranges = []


def test_download_verifies_and_unpacks(server: str, tmp_path: Path) -> None:
    body = _archive(tmp_path)
    _serve(body)
    folder = download("ml-latest-small", tmp_path / "data", server)
    assert (folder / "movies.csv").read_text().startswith("movieId,title,genres")
    assert _Files.sent == len(body)
    _Files.sent = 0
    download("ml-latest-small", tmp_path / "data", server)  # already there and verified: nothing fetched
    assert _Files.sent == 0


def test_interrupted_download_resumes_with_range(server: str, tmp_path: Path) -> None:
    body = _archive(tmp_path)
    _serve(body)
    dest = tmp_path / "data"
    dest.mkdir()
    half = len(body) // 2
    (dest / "ml-latest-small.zip.part").write_bytes(body[:half])
    download("ml-latest-small", dest, server)
    assert _Files.ranges == [f"bytes={half}-"] and _Files.sent == len(body) - half
    assert (dest / "ml-latest-small.zip").read_bytes() == body


def test_checksum_mismatch_is_refused_and_removed(server: str, tmp_path: Path) -> None:
    body = _archive(tmp_path)
    _serve(body, md5="0" * 32)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download("ml-latest-small", tmp_path / "data", server)
    assert not list((tmp_path / "data").glob("*.zip*"))


def test_unknown_name_and_missing_archive(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="unknown data set"):
        download("ml-1b", tmp_path, server)
    _Files.files = {}
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("ml-25m", tmp_path, server)


def test_an_unreachable_host_is_a_clear_error_through_the_cli(tmp_path: Path) -> None:
    # port 9 (discard) on this machine: nothing listens, the connection is refused at once
    with pytest.raises(DownloadError, match=re.escape("cannot reach http://127.0.0.1:9/ml-latest-small.zip")):
        download("ml-latest-small", tmp_path, "http://127.0.0.1:9")
    done = subprocess.run(
        [sys.executable, "-m", "app", "data", "download", "ml-latest-small"],
        env={**os.environ, "CINEREC_HOME": str(tmp_path), "CINEREC_DATASET_BASE_URL": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "cannot reach" in done.stderr and "Traceback" not in done.stderr


def test_ml100k_is_converted_to_the_25m_layout_through_the_cli(server: str, tmp_path: Path) -> None:
    path = tmp_path / "ml-100k.zip"
    flags = "|".join(["0"] * 19)
    animation = "|".join(["0", "0", "0", "1"] + ["0"] * 15)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ml-100k/u.data", "1\t1\t5\t874965758\n2\t2\t3\t876893171\n")
        z.writestr(
            "ml-100k/u.item",
            f"1|Toy Story (1995)|01-Jan-1995||http://x|{animation}\n2|GoldenEye (1995)|01-Jan-1995||http://x|{flags}\n",
        )
        z.writestr("ml-100k/u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
        z.writestr(
            "ml-100k/u.genre",
            "".join(
                f"{g}|{i}\n"
                for i, g in enumerate(
                    ["unknown", "Action", "Adventure", "Animation"] + [f"G{i}" for i in range(15)]
                )
            ),
        )
    body = path.read_bytes()
    _Files.files = {
        "/datasets/ml-100k.zip": body,
        "/datasets/ml-100k.zip.md5": hashlib.md5(body).hexdigest().encode(),
    }
    env = {**os.environ, "CINEREC_DATASET_BASE_URL": server, "CINEREC_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "app", "data", "download", "ml-100k"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "home" / "data" / "ml-100k"
    assert (folder / "ratings.csv").read_text().splitlines() == [
        "userId,movieId,rating,timestamp",
        "1,1,5.0,874965758",
        "2,2,3.0,876893171",
    ]
    assert (folder / "movies.csv").read_text().splitlines()[1:] == [
        "1,Toy Story (1995),Animation",
        "2,GoldenEye (1995),(no genres listed)",
    ]
    assert (folder / "users.csv").read_text().splitlines()[0] == "userId,age,gender,occupation,zip"
