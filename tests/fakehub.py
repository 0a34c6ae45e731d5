"""A Hugging Face Hub on 127.0.0.1 for tests: HEAD/GET <repo>/resolve/<revision>/<file>, as huggingface_hub asks.

Point HF_ENDPOINT at it. Repos are dicts of file name -> bytes in `Hub.repos`; a missing repo or file answers
404 with the X-Error-Code the real Hub sends, so huggingface_hub raises its own errors.
"""
import hashlib
import http.server
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"
class Hub(http.server.BaseHTTPRequestHandler):
    repos = {}
    def _route(self, body):
        parts = self.path.split("?")[0].strip("/").split("/")
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
