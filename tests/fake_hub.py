"""A local stand-in for the Hub API that huggingface_hub 2.4's create_repo / create_commit call, recording uploads.

Endpoints (from huggingface_hub/hf_api.py and _commit_api.py):
    POST /api/repos/create                            create_repo (409 when it exists; exist_ok turns that into ok)
    GET  /api/models/<ns>/<name>[/revision/<rev>]     repo_info / model_info
    POST /api/validate-yaml                           create_commit checks README.md metadata before uploading
    POST /api/models/<ns>/<name>/preupload/<rev>      upload mode per file: we answer "regular" for all, so the
                                                      content travels base64 in the commit (no LFS, no Xet)
    POST /api/models/<ns>/<name>/commit/<rev>         the commit itself, NDJSON: a header line then one per file
    GET  /api/whoami-v2                               who the token belongs to
Every call must carry `Authorization: Bearer <token>`; another token gets 401 like the real Hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USER = "me"
REPO_PATH = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<action>preupload|commit|revision)/(?P<rev>[^/]+))?$"
)


@dataclass
class FakeRepo:
    repo_id: str
    private: bool
    create_payload: dict[str, Any]
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def files(self) -> dict[str, bytes]:
        """The repository's files at its last commit."""
        current: dict[str, bytes] = {}
        for commit in self.commits:
            current.update(commit["files"])
        return current

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40


@dataclass
class FakeHub:
    token: str
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every call, in order
    validated: list[str] = field(default_factory=list)  # README.md texts sent to validate-yaml
    url: str = ""

    def validate_card(self, content: str) -> list[str]:
        """What the Hub would reject in README.md metadata: unparsable YAML or model-index, a bad pipeline tag."""
        from huggingface_hub import ModelCard
        from huggingface_hub.repocard_data import model_index_to_eval_results

        try:
            card = ModelCard(content)
            metadata = card.data.to_dict()
            if "model-index" in metadata:
                model_index_to_eval_results(metadata["model-index"])
        except (ValueError, KeyError, TypeError) as error:
            return [str(error)]
        errors = []
        if metadata.get("pipeline_tag") not in (None, "text-generation", "text2text-generation"):
            errors.append(f"pipeline_tag {metadata['pipeline_tag']!r} is not a known task")
        if not isinstance(metadata.get("license", ""), str):
            errors.append("license must be a string")
        return errors


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._reply(401, {"error": "Invalid credentials in Authorization header"}, {"X-Error-Code": "InvalidCreds"})
        return False

    def _repo(self, repo_id: str) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return repo

    def do_GET(self):
        self.hub.requests.append(("GET", self.path))
        path = self.path.split("?")[0]
        if not self._authorized():
            return
        if path == "/api/whoami-v2":
            return self._reply(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}})
        match = REPO_PATH.match(path)
        if not match or match["action"] not in (None, "revision"):
            return self._reply(404, {"error": f"no fake endpoint for GET {path}"})
        if repo := self._repo(match["repo"]):
            self._reply(200, {"id": repo.repo_id, "private": repo.private, "sha": repo.sha})
        return None

    def do_POST(self):
        self.hub.requests.append(("POST", self.path))
        path = self.path.split("?")[0]
        body = self._body()
        if not self._authorized():
            return
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
            if repo_id in self.hub.repos:
                return self._reply(409, {"error": "You already created this model repo", "url": self._url(repo_id)})
            private = payload.get("visibility") == "private"
            self.hub.repos[repo_id] = FakeRepo(repo_id, private, payload)
            return self._reply(200, {"url": self._url(repo_id), "name": repo_id})
        if path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            self.hub.validated.append(content)
            errors = self.hub.validate_card(content)
            return self._reply(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})
        match = REPO_PATH.match(path)
        if not match or match["action"] not in ("preupload", "commit"):
            return self._reply(404, {"error": f"no fake endpoint for POST {path}"})
        repo = self._repo(match["repo"])
        if repo is None:
            return None
        if match["action"] == "preupload":
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return self._reply(200, {"files": modes})
        return self._commit(repo, body)

    def _commit(self, repo: FakeRepo, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files, unsupported = {}, []
        for line in lines:
            if line["key"] == "file" and line["value"].get("encoding") == "base64":
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] != "header":
                unsupported.append(line["key"])
        if unsupported:
            return self._reply(400, {"error": f"the fake Hub takes regular files only, got {unsupported}"})
        oid = hashlib.sha1(body).hexdigest()
        repo.commits.append({"oid": oid, "summary": header["summary"], "files": files})
        return self._reply(200, {"commitUrl": f"{self._url(repo.repo_id)}/commit/{oid}", "commitOid": oid})

    def _url(self, repo_id: str) -> str:
        return f"{self.hub.url}/{repo_id}"


class FakeHubServer:
    """`with FakeHubServer(token) as hub:` serves on 127.0.0.1:<free port>; `hub.url` is its HF_ENDPOINT."""

    def __init__(self, token: str):
        self.hub = FakeHub(token=token)
        handler = type("Handler", (_Handler,), {"hub": self.hub})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for it, and tests start and stop many servers.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self.hub

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
