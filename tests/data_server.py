"""A mirror of the datasets' upstream files on 127.0.0.1, built from a local data folder: it serves
``/<repo>/<commit>/<source>`` as the repository holds it (a file stored gzipped is served
decompressed; Marvin & Linzen's JSON Lines as the pickles it was converted from), and can corrupt,
truncate or withhold any file to test what a download does with them."""
from __future__ import annotations

import gzip
import threading
from collections import Counter
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.core.catalogue import DataFile, datasets, jsonl_to_pickles


class Mirror:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        #: url path -> "corrupt" | "truncate" | "truncate_once" | "missing"
        self.faults: dict[str, str] = {}
        self.requests: Counter = Counter()
        self._converted: dict[str, dict[str, bytes]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def path_of(self, dataset: str, path: str, source: int = 0) -> str:
        """The URL path of a registered file's (first) source."""
        f = next(f for f in datasets()[dataset].files if f.path == path)
        return f"/{f.repo}/{f.commit}/{f.sources[source]}"

    @cached_property
    def _routes(self) -> dict[str, DataFile]:
        return {f"/{f.repo}/{f.commit}/{source}": f for ds in datasets().values() for f in ds.files for source in f.sources}

    def body(self, url_path: str) -> bytes | None:
        f = self._routes.get(url_path)
        if f is None:
            return None
        path = f.path
        stored = (self.data_dir / f.dataset / path).read_bytes()
        if f.unpack == "copy":
            return stored
        if f.unpack == "gzip":
            return gzip.decompress(stored)
        if path not in self._converted:
            self._converted[path] = jsonl_to_pickles(gzip.decompress(stored))
        return self._converted[path][Path(url_path).stem]

    def _handler(self):
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests[self.path] += 1
                fault = mirror.faults.get(self.path)
                body = mirror.body(self.path)
                if body is None or fault == "missing":
                    self.send_error(404)
                    return
                if fault == "corrupt":
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault in ("truncate", "truncate_once"):
                    if fault == "truncate_once":
                        del mirror.faults[self.path]
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Serve a data folder as the datasets' upstream mirror on 127.0.0.1.")
    parser.add_argument("data_dir", type=Path, help="a folder laid out as ../shared/data")
    args = parser.parse_args()
    mirror = Mirror(args.data_dir)
    print(f"HARNESS_DATA_URL={mirror.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        mirror.close()
