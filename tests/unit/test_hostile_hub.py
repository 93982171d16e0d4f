"""A hub that lies in its listing: raydf refuses it and writes nothing outside -O.

The emulator serves real folders, which cannot hold such entries, so this is a
small real HTTP server on loopback that answers the Hugging Face listing calls
with whatever entries a test gives it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from raydf.cli import main

COMMIT = "a" * 40


class LyingHub(ThreadingHTTPServer):
    entries: ClassVar[list[dict[str, Any]]] = []


class Handler(BaseHTTPRequestHandler):
    server: LyingHub

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if "/revision/" in self.path:
            body = {"id": "evil/repo", "sha": COMMIT, "siblings": []}
        elif "/tree/" in self.path:
            body = self.server.entries  # type: ignore[assignment]
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def lying_hub() -> Iterator[LyingHub]:
    server = LyingHub(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def entry(path: str, size: int = 3) -> dict[str, Any]:
    return {"type": "file", "path": path, "size": size, "oid": "0" * 40}


@pytest.mark.parametrize(
    "entries",
    [
        [entry("../escape.txt")],
        [entry("ok/../../escape.txt")],
        [entry("/etc/passwd")],
        [entry("dir\\..\\escape.txt")],
        [entry("nul\x00byte")],
        [entry("a//b")],
        [entry("./hidden")],
        [entry("same.txt"), entry("same.txt")],
        [entry("clash"), entry("clash/inner.txt")],
        [entry("negative.bin", size=-1)],
        [entry("absurd.bin", size=2**62)],
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "backslash", "nul", "empty-segment",
         "dot", "duplicate", "file-and-folder", "negative-size", "absurd-size"],
)
def test_hostile_listing_is_refused_and_nothing_is_written(
    entries: list[dict[str, Any]], lying_hub: LyingHub, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lying_hub.entries = entries
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    endpoint = f"http://127.0.0.1:{lying_hub.server_address[1]}"
    out = tmp_path / "deep" / "out"
    code = main(["get", "hf://evil/repo", "-O", str(out), "-r", "--local", "--no-progress",
                 "--hf-endpoint", endpoint])
    err = capsys.readouterr().err
    assert code in (3, 4), err
    assert err.startswith("raydf: error:") and "Traceback" not in err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []
