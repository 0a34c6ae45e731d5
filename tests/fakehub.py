"""A Hugging Face Hub on 127.0.0.1 for tests: HEAD/GET <repo>/resolve/<revision>/<file>, as huggingface_hub asks,
and the two listings snapshot_download reads: /api/<type>s/<repo>/revision/<rev> and /api/<type>s/<repo>/tree/<rev>.

Point HF_ENDPOINT at it. Repos are dicts of file name -> bytes in `Hub.repos`; a missing repo or file answers
404 with the X-Error-Code the real Hub sends, so huggingface_hub raises its own errors.
"""
import hashlib
import http.server
import json
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"
class Hub(http.server.BaseHTTPRequestHandler):
    repos = {}
    def _route(self, body):
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 6 and parts[0] == "api" and parts[4] in ("revision", "tree"):
            return self._listing(parts, body)
        prefix = ""
        if parts and parts[0] == "datasets":  # dataset repos live under /datasets/; keyed here as "datasets/org/name"
            prefix, parts = "datasets/", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, _revision, name = prefix + "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            files = self.repos.get(repo)
            if files is None:
                return self._err(404, "RepoNotFound", body)
            if name not in files:
                return self._err(404, "EntryNotFound", body)
            data = files[name]
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest())
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body: self.wfile.write(data)
            return
        self._err(404, "RepoNotFound", body)
    def _listing(self, parts, body):
        repo = ("datasets/" if parts[1] == "datasets" else "") + "/".join(parts[2:4])
        files = self.repos.get(repo)
        if files is None:
            return self._err(404, "RepoNotFound", body)
        if parts[4] == "revision":
            payload = {"id": "/".join(parts[2:4]), "sha": COMMIT, "siblings": [{"rfilename": n} for n in sorted(files)]}
        else:
            payload = [{"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                       for n, d in sorted(files.items())]
        data = json.dumps(payload).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers()
        if body: self.wfile.write(data)
    def _err(self, code, kind, body):
        msg = b'{"error": "not found"}'
        self.send_response(code); self.send_header("X-Error-Code", kind); self.send_header("Content-Length", str(len(msg))); self.end_headers()
        if body: self.wfile.write(msg)
    def do_HEAD(self): self._route(False)
    def do_GET(self): self._route(True)
    def log_message(self, *a): pass

def serve():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
