"""Fixtures: tiny archives in each dataset's real layout, a loopback HTTP server that serves them, the registry."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from _archives import MEMBERS, SIZE, write_zip

from instanseg_scnp.data import REGISTRY


@pytest.fixture
def make_archive(tmp_path):
    """``make_archive(dataset, size=48, drop=(), members=None)`` -> (path of the zip named as the real one,
    its registry entry with the zip's real size and MD5)."""

    def make(dataset: str, *, size: int = SIZE, drop=(), members: dict[str, bytes] | None = None, folder="served"):
        members = MEMBERS[dataset](np.random.default_rng(0), size, drop=drop) if members is None else members
        path = write_zip(tmp_path / folder / REGISTRY[dataset].filename, members)
        data = path.read_bytes()
        entry = dataclasses.replace(REGISTRY[dataset], size=len(data), md5=hashlib.md5(data).hexdigest(),
                                    sha256=None)
        return path, entry

    return make


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        if server.truncate > 0:  # send the headers of the whole file, half of it, then hang up
            server.truncate -= 1
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server of ``tmp_path/served``: ``.url``; ``.requests`` (paths asked);
    ``.truncate = n`` cuts the next n responses in half."""
    folder = tmp_path / "served"
    folder.mkdir(exist_ok=True)
    handler = lambda *args, **kwargs: _Handler(*args, directory=str(folder), **kwargs)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.requests, httpd.truncate = [], 0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def registry(monkeypatch):
    """``registry(entry)``: put a test archive's entry (its real size and checksum) in place of the real one."""
    from instanseg_scnp.data import registry as module

    def use(entry):
        monkeypatch.setitem(module.REGISTRY, entry.dataset, entry)
        return entry

    return use


