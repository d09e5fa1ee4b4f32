"""A stand-in for the Hugging Face hub on the loopback interface: one dataset repository, one commit.

It answers the requests that huggingface_hub and datasets make to read a dataset (the
revision's info, tree listings, file metadata and content), so that the online path of a
hub source can be tested without the network. Every request is logged.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """Serves ``files`` ({path: bytes}) of dataset ``repo`` at ``commit``, which the branches in ``refs`` point at."""

    def __init__(self, repo: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)):
        self.repo, self.commit, self.files, self.refs = repo, commit, files, set(refs)
        self.log: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def known(self, revision: str) -> bool:
        return urllib.parse.unquote(revision) in self.refs | {self.commit}

    def tree(self, under: str, recursive: bool) -> list[dict]:
        under = under.strip("/")
        items, dirs = [], set()
        for path, data in sorted(self.files.items()):
            if under and not path.startswith(under + "/"):
                continue
            parts = path[len(under) + 1 :].split("/") if under else path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(([under] if under else []) + parts[:depth])
                if (recursive or depth == 1) and folder not in dirs:
                    dirs.add(folder)
                    items.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
            if recursive or len(parts) == 1:
                items.append({"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path})
        return items


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    api = f"/api/datasets/{hub.repo}"
    resolve = f"/datasets/{hub.repo}/resolve/"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def answer(self, code: int, body: bytes = b"{}", **headers: str) -> None:
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            url = urllib.parse.urlparse(self.path)
            path = urllib.parse.unquote(url.path)
            hub.log.append((self.command, path))
            if path.startswith(api + "/revision/"):
                if not hub.known(path[len(api + "/revision/") :]):
                    return self.answer(404, X_Error_Code="RevisionNotFound")
                info = {"id": hub.repo, "sha": hub.commit, "siblings": [{"rfilename": p} for p in hub.files], "private": False, "gated": False}
                return self.answer(200, json.dumps(info).encode(), Content_Type="application/json")
            if path.startswith(api + "/tree/"):
                revision, _, under = path[len(api + "/tree/") :].partition("/")
                recursive = urllib.parse.parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
                items = hub.tree(under, recursive)
                if not hub.known(revision) or (under and not items):
                    return self.answer(404, X_Error_Code="EntryNotFound")
                return self.answer(200, json.dumps(items).encode(), Content_Type="application/json")
            if path.startswith(resolve):
                revision, _, name = path[len(resolve) :].partition("/")
                if not hub.known(revision):
                    return self.answer(404, X_Error_Code="RevisionNotFound")
                if name not in hub.files:
                    return self.answer(404, X_Error_Code="EntryNotFound", X_Repo_Commit=hub.commit)
                data = hub.files[name]
                etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                return self.answer(200, data, X_Repo_Commit=hub.commit, ETag=etag, Content_Type="application/octet-stream")
            return self.answer(404, X_Error_Code="RepoNotFound")

        do_HEAD = do_GET

    return Handler
