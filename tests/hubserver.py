"""A local HTTP server that serves repositories the way the Hugging Face hub does.

Used by the tests of lorq's hub client (common/hub.c) instead of the network:

- ``GET /api/models/<owner>/<name>/revision/<rev>``: ``{"id", "sha", "siblings": [{"rfilename"}]}``
- ``HEAD|GET /<owner>/<name>/resolve/<rev>/<file>``: small files answer 200 with an
  ``ETag`` and ``X-Repo-Commit``; ``*.safetensors`` are LFS files: 302 to ``/cdn/<sha256>``
  with ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``, as the hub does.
- ``GET /cdn/<sha256>``: the bytes, honouring ``Range``.

Private repositories answer 401 without the right bearer token; unknown ones 404.
Faults for tests: ``truncate`` (the first transfer of each blob stops halfway),
``corrupt`` (one byte flipped), ``slow_seconds`` (a pause between chunks), ``stall`` (the transfer stops after its
first chunk and the connection stays open), ``ignore_range``.
Every request is counted in ``server.hits`` by (method, path).
"""
import collections
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Repo:
    def __init__(self, files, private=False, token=None, revision="main"):
        self.files = dict(files)  # name -> bytes
        self.private = private
        self.token = token
        blob = b"".join(k.encode() + hashlib.sha1(v).digest() for k, v in sorted(self.files.items()))
        self.sha = hashlib.sha1(blob).hexdigest()
        self.revision = revision


class Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.repos = {}
        self.blobs = {}  # sha256 -> bytes
        self.faults = set()
        self.truncated = set()
        self.slow_seconds = 0.0
        self.hits = collections.Counter()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, repo_id, files, **kw):
        repo = Repo(files, **kw)
        self.repos[repo_id] = repo
        for name, data in repo.files.items():
            if name.endswith(".safetensors"):
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        return repo

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()

    def count(self, prefix, method=None):
        with self.lock:
            return sum(n for (m, p), n in self.hits.items() if p.startswith(prefix) and (method is None or m == method))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    # -- helpers --
    def send(self, status, body=b"", headers=None, head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def error(self, status, message, head=False):
        body = json.dumps({"error": message}).encode()
        self.send(status, body, {"Content-Type": "application/json", "X-Error-Message": message}, head)

    def repo_for(self, owner, name, head):
        repo = self.server.repos.get(f"{owner}/{name}")
        if repo is None:
            self.error(404, "Repository not found", head)
            return None
        if repo.private and self.headers.get("Authorization") != f"Bearer {repo.token}":
            self.error(401, "Invalid credentials in Authorization header", head)
            return None
        return repo

    def route(self, head):
        hub = self.server
        path = self.path.split("?")[0]
        with hub.lock:
            hub.hits[(self.command, path)] += 1
        parts = path.strip("/").split("/")
        if len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] == "revision":
            return self.revision(parts[2], parts[3], "/".join(parts[5:]), head)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(parts[0], parts[1], parts[3], "/".join(parts[4:]), head)
        if len(parts) == 2 and parts[0] == "cdn":
            return self.cdn(parts[1], head)
        self.error(404, "Not found", head)

    def revision(self, owner, name, rev, head):
        repo = self.repo_for(owner, name, head)
        if repo is None:
            return
        if rev not in (repo.revision, repo.sha):
            return self.error(404, f"Invalid rev id: {rev}", head)
        doc = {"id": f"{owner}/{name}", "sha": repo.sha,
               "siblings": [{"rfilename": n} for n in sorted(repo.files)]}
        self.send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"}, head)

    def resolve(self, owner, name, rev, filename, head):
        repo = self.repo_for(owner, name, head)
        if repo is None:
            return
        if rev not in (repo.revision, repo.sha):
            return self.error(404, f"Invalid rev id: {rev}", head)
        data = repo.files.get(filename)
        if data is None:
            return self.error(404, "Entry not found", head)
        common = {"X-Repo-Commit": repo.sha}
        if filename.endswith(".safetensors"):
            digest = hashlib.sha256(data).hexdigest()
            headers = dict(common, **{"Location": f"/cdn/{digest}", "X-Linked-Etag": f'"{digest}"',
                                      "X-Linked-Size": str(len(data)), "ETag": f'"{digest}"'})
            return self.send(302, b"", headers, head)
        etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.send(200, data, dict(common, **{"ETag": f'"{etag}"'}), head)

    def cdn(self, digest, head):
        hub = self.server
        data = hub.blobs.get(digest)
        if data is None:
            return self.error(404, "No such blob", head)
        if "corrupt" in hub.faults:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = self.headers.get("Range")
        if rng and "ignore_range" not in hub.faults and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                return self.send(416, b"", {}, head)
        body = data[start:]
        status = 206 if start else 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{digest}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        cut = len(body)
        with hub.lock:
            if "truncate" in hub.faults and digest not in hub.truncated:
                hub.truncated.add(digest)
                cut = len(body) // 2
        step = 1 << 16
        for off in range(0, cut, step):
            self.wfile.write(body[off:min(off + step, cut)])
            if hub.slow_seconds:
                self.wfile.flush()
                time.sleep(hub.slow_seconds)
            if "stall" in hub.faults:
                self.wfile.flush()
                time.sleep(20)
                return
        if cut < len(body):
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
