"""A small read-only Docker registry (distribution API v2) on 127.0.0.1, serving one image made
from a local one with `docker save`, for tests of pulls, credentials, digests and retries.

The engine talks to it for real; the test decides what it answers: basic auth, a number of
transient 503s, or nothing at all."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


class Registry:
    def __init__(self, source_image: str, repo: str = "test/busybox", tag: str = "1") -> None:
        self.repo, self.tag = repo, tag
        self.blobs: dict[str, bytes] = {}
        self.manifest = self._load(source_image)
        self.manifest_digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        self.auth: tuple[str, str] | None = None
        self.fail_next = 0  # answer this many manifest requests with 503 first
        self.manifest_requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def image(self) -> str:
        return f"127.0.0.1:{self.port}/{self.repo}:{self.tag}"

    @property
    def digest_ref(self) -> str:
        return f"127.0.0.1:{self.port}/{self.repo}@{self.manifest_digest}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _load(self, source_image: str) -> bytes:
        saved = subprocess.run(["docker", "save", source_image], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
            meta = json.load(tar.extractfile("manifest.json"))[0]
            config = tar.extractfile(meta["Config"]).read()
            layers = [gzip.compress(tar.extractfile(name).read(), mtime=0) for name in meta["Layers"]]
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": self._blob(config, "application/vnd.docker.container.image.v1+json"),
            "layers": [self._blob(layer, "application/vnd.docker.image.rootfs.diff.tar.gzip") for layer in layers],
        }
        return json.dumps(manifest).encode()

    def _blob(self, data: bytes, media_type: str) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return {"mediaType": media_type, "size": len(data), "digest": digest}

    def _handler(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _authorized(self) -> bool:
                if registry.auth is None:
                    return True
                expected = "Basic " + base64.b64encode(":".join(registry.auth).encode()).decode()
                if self.headers.get("Authorization") == expected:
                    return True
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="anna-run-test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def _send(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                path = self.path.split("?")[0]
                if path in ("/v2/", "/v2"):
                    return self._send(200, b"{}", {"Content-Type": "application/json"})
                prefix = f"/v2/{registry.repo}/"
                if path.startswith(prefix + "manifests/"):
                    registry.manifest_requests += 1
                    if registry.fail_next > 0:
                        registry.fail_next -= 1
                        return self._send(503, b"busy")
                    ref = path[len(prefix + "manifests/") :]
                    if ref not in (registry.tag, registry.manifest_digest):
                        body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
                        return self._send(404, body, {"Content-Type": "application/json"})
                    return self._send(
                        200,
                        registry.manifest,
                        {
                            "Content-Type": MANIFEST_TYPE,
                            "Docker-Content-Digest": registry.manifest_digest,
                        },
                    )
                if path.startswith(prefix + "blobs/"):
                    data = registry.blobs.get(path[len(prefix + "blobs/") :])
                    if data is None:
                        return self._send(404, b"{}")
                    return self._send(200, data, {"Content-Type": "application/octet-stream"})
                body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}'
                return self._send(404, body, {"Content-Type": "application/json"})

            do_HEAD = do_GET

        return Handler


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (for an unreachable registry)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
