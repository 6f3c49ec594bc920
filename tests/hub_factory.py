"""A Hugging Face Hub on 127.0.0.1 that answers the HTTP calls huggingface_hub makes, as the real Hub answers them.

    with FakeHub() as hub:
        hub.add_repo("dataset", "xxayt/MGSV-EC", files, commit=SHA)
        hub.add_repo("dataset", "xxayt/MGSV-EC-Raw", media, gated=True, approved={"hf_ok"})
        hub.add_user("hf_writer", "alice")
        hf_hub_download(..., endpoint=hub.url)

The endpoints and their answers were taken from huggingface_hub 2.4's own source (the version in the project's
venv): `HfApi.repo_info` / `dataset_info` (GET /api/{type}s/{id}[/revision/{rev}], `blobs=True` adds sizes),
`list_repo_tree` (GET /api/{type}s/{id}/tree/{rev}[/{path}]?recursive=), `hf_hub_download` (HEAD then GET
/[datasets/]{id}/resolve/{rev}/{path}, headers X-Repo-Commit and ETag, Range for resumes), `create_repo`
(POST /api/repos/create; 409 when it exists), `create_commit` (POST /api/validate-yaml for a README.md, POST
/api/{type}s/{id}/preupload/{rev} -> uploadMode "lfs" or "regular", the git-LFS batch API at
/[datasets/]{id}.git/info/lfs/objects/batch with basic-transfer upload/verify actions, then POST
/api/{type}s/{id}/commit/{rev} with an NDJSON body of header / file / lfsFile lines) and `create_branch`
(POST /api/{type}s/{id}/branch/{name}). Error answers carry the `X-Error-Code` / `X-Error-Message` headers that
`huggingface_hub.utils.hf_raise_for_status` maps to exception classes; the gated-repository answers repeat the
Hub's wording as users report it (huggingface/transformers#31367, ToTheBeginning/PuLID#97): 401 "Access to
{type} {id} is restricted. You must have access to it and be authenticated to access it. Please log in." without
a token, 403 "... is restricted and you are not in the authorized list. Visit {url} to ask for access." with a
token that was not granted access. A gated repository's listing stays public, as on the Hub ("This repository is
publicly accessible, but you have to accept the conditions to access its files and content").

Two simplifications, both transparent to huggingface_hub: LFS files are served from the resolve URL itself (the
real Hub redirects them to a CDN, which the client follows), and uploads go through the git-LFS protocol, not
Xet (tests set HF_HUB_DISABLE_XET so that huggingface_hub, which prefers Xet when `hf_xet` is installed, uses
the LFS protocol the Hub also still serves).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

# The LFS patterns of the .gitattributes the Hub writes in a new repository's initial commit (an excerpt).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.pt", "*.pth", "*.safetensors", "*.zip", "*.mp4", "*.mp3", "*.ckpt", "*.npy")
)
REGULAR_LIMIT = 10 * 1024 * 1024  # larger files go to LFS whatever their name


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    repo_type: str  # "model" or "dataset"
    repo_id: str
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> path -> content
    private: bool = False
    gated: bool = False
    approved: set[str] = field(default_factory=set)  # tokens granted access to a gated repository
    owner_tokens: set[str] = field(default_factory=set)  # tokens that may write

    @property
    def type_word(self) -> str:
        return {"model": "model", "dataset": "dataset"}[self.repo_type]

    def lfs_patterns(self, commit: str) -> list[str]:
        text = self.commits[commit].get(".gitattributes", b"").decode()
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line]

    def is_lfs(self, commit: str, path: str, size: int) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size > REGULAR_LIMIT or any(fnmatch.fnmatch(name, p) for p in self.lfs_patterns(commit))


class FakeHub:
    """The Hub's HTTP API for the calls listed in the module docstring; see `add_repo` and `add_user`."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.users: dict[str, str] = {}  # token -> user name
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.listed_sizes: dict[tuple[str, str], int] = {}  # (repo_id, path) -> size the listing claims instead
        self.drop_first_get: set[str] = set()  # file paths whose first GET is cut off halfway
        self.requests: list[tuple[str, str, str | None]] = []  # (method, unquoted path, Range header)
        self.authorizations: list[str | None] = []  # the bearer token of each request (None: anonymous)
        self.statuses: list[int] = []  # the status code of each answer
        self._counter = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._dispatch(self, head=True)

            def do_GET(self) -> None:
                hub._dispatch(self, head=False)

            def do_POST(self) -> None:
                hub._dispatch(self, head=False)

            def do_PUT(self) -> None:
                hub._dispatch(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- set-up --------------------------------------------------------------------------------------------------

    def add_user(self, token: str, name: str) -> None:
        self.users[token] = name

    def add_repo(
        self,
        repo_type: str,
        repo_id: str,
        files: dict[str, bytes],
        *,
        commit: str | None = None,
        gated: bool = False,
        approved: set[str] | None = None,
        private: bool = False,
        owner_token: str | None = None,
    ) -> FakeRepo:
        repo = FakeRepo(repo_type, repo_id, private=private, gated=gated, approved=set(approved or ()))
        if owner_token:
            repo.owner_tokens.add(owner_token)
        sha = commit or self._new_commit_id(repo_id)
        repo.commits[sha] = {".gitattributes": DEFAULT_GITATTRIBUTES.encode(), **files}
        repo.branches["main"] = sha
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return repo.commits[repo.branches.get(revision, revision)]

    def _new_commit_id(self, seed: str) -> str:
        self._counter += 1
        return hashlib.sha1(f"{seed}:{self._counter}".encode()).hexdigest()

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def _dispatch(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        parsed = urlparse(handler.path)
        raw_segments = [s for s in parsed.path.split("/") if s]
        segments = [unquote(s) for s in raw_segments]
        self.requests.append((handler.command, unquote(parsed.path), handler.headers.get("Range")))
        auth = handler.headers.get("Authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        self.authorizations.append(token)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        reply = _Reply(handler, head, self.statuses)
        if token is not None and token not in self.users:
            return reply.error(401, None, "Invalid credentials in Authorization header")
        query = parse_qs(parsed.query)
        try:
            self._route(reply, handler.command, segments, query, body, token)
        except _Abort:
            pass

    def _route(self, reply: _Reply, method: str, seg: list[str], query: dict[str, list[str]], body: bytes,
               token: str | None) -> None:
        if seg[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(reply, json.loads(body), token)
        if seg == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(reply, json.loads(body))
        if seg[:1] == ["lfs-upload"] and method == "PUT":
            data = body
            if hashlib.sha256(data).hexdigest() != seg[1]:
                return reply.error(400, None, "sha256 of the uploaded content does not match the object id")
            self.lfs_objects[seg[1]] = data
            return reply.json(200, {})
        if seg[:1] == ["lfs-verify"] and method == "POST":
            request = json.loads(body)
            if request["oid"] not in self.lfs_objects:
                return reply.error(404, None, "object not uploaded")
            return reply.json(200, {})
        if seg[:1] == ["api"] and len(seg) >= 4 and seg[1] in ("models", "datasets"):
            repo_type = seg[1][:-1]
            repo = self._visible_repo(reply, repo_type, f"{seg[2]}/{seg[3]}", token)
            rest = seg[4:]
            if not rest and method == "GET":
                return self._info(reply, repo, "main", query)
            action, args = rest[0], rest[1:]
            if action == "revision" and method == "GET":
                return self._info(reply, repo, "/".join(args), query)
            if action == "tree" and method == "GET":
                return self._tree(reply, repo, args[0], "/".join(args[1:]), query)
            if action == "preupload" and method == "POST":
                return self._preupload(reply, repo, "/".join(args), json.loads(body), token)
            if action == "commit" and method == "POST":
                return self._commit(reply, repo, "/".join(args), body, token)
            if action == "branch" and method == "POST":
                return self._branch(reply, repo, "/".join(args), json.loads(body or b"{}"), token)
        repo_type, seg = ("dataset", seg[1:]) if seg[:1] == ["datasets"] else ("model", seg)
        if len(seg) >= 6 and seg[1].endswith(".git") and seg[2:] == ["info", "lfs", "objects", "batch"]:
            repo = self._visible_repo(reply, repo_type, f"{seg[0]}/{seg[1][:-4]}", token)
            return self._lfs_batch(reply, repo, json.loads(body), token)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._visible_repo(reply, repo_type, f"{seg[0]}/{seg[1]}", token)
            return self._resolve(reply, repo, seg[3], "/".join(seg[4:]), token)
        reply.error(404, "RepoNotFound", "Repository not found")

    def _visible_repo(self, reply: _Reply, repo_type: str, repo_id: str, token: str | None) -> FakeRepo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and token not in repo.owner_tokens):
            reply.error(404, "RepoNotFound", "Repository not found")
            raise _Abort
        return repo

    def _commit_of(self, reply: _Reply, repo: FakeRepo, revision: str) -> str:
        commit = repo.branches.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            reply.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            raise _Abort
        return commit

    def _size(self, repo: FakeRepo, path: str, data: bytes) -> int:
        return self.listed_sizes.get((repo.repo_id, path), len(data))

    def _info(self, reply: _Reply, repo: FakeRepo, revision: str, query: dict[str, list[str]]) -> None:
        commit = self._commit_of(reply, repo, revision)
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, data in sorted(repo.commits[commit].items()):
            entry: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry.update(size=self._size(repo, path, data), blobId=git_blob_id(data))
            siblings.append(entry)
        reply.json(200, {"id": repo.repo_id, "sha": commit, "private": repo.private,
                         "gated": "manual" if repo.gated else False, "disabled": False, "siblings": siblings})

    def _tree(self, reply: _Reply, repo: FakeRepo, revision: str, under: str, query: dict[str, list[str]]) -> None:
        commit = self._commit_of(reply, repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{under}/" if under else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(repo.commits[commit].items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "oid": git_blob_id(folder.encode()),
                                                "path": folder})
            if recursive or len(parts) == 1:
                entry: dict[str, Any] = {"type": "file", "oid": git_blob_id(data),
                                         "size": self._size(repo, path, data), "path": path}
                if repo.is_lfs(commit, path, len(data)):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries[path] = entry
        if under and not entries:
            return reply.error(404, "EntryNotFound", f"{under} does not exist on \"{revision}\"")
        reply.json(200, list(entries.values()))

    def _resolve(self, reply: _Reply, repo: FakeRepo, revision: str, path: str, token: str | None) -> None:
        commit = self._commit_of(reply, repo, revision)
        if repo.gated and token not in repo.approved:
            page = f"{self.url}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}"
            if token is None:
                return reply.error(401, "GatedRepo", f"Access to {repo.type_word} {repo.repo_id} is restricted. You "
                                   "must have access to it and be authenticated to access it. Please log in.")
            return reply.error(403, "GatedRepo", f"Access to {repo.type_word} {repo.repo_id} is restricted and you "
                               f"are not in the authorized list. Visit {page} to ask for access.")
        files = repo.commits[commit]
        if path not in files:
            return reply.error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        data = files[path]
        lfs = repo.is_lfs(commit, path, len(data))
        etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_id(data)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}
        ranged = reply.handler.headers.get("Range")
        if reply.head:
            return reply.send(200, data, headers)
        if ranged:
            start = int(ranged.split("=")[1].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return reply.send(206, data[start:], headers)
        if path in self.drop_first_get:
            self.drop_first_get.discard(path)
            return reply.send_truncated(data, headers)
        reply.send(200, data, headers)

    def _create_repo(self, reply: _Reply, request: dict[str, Any], token: str | None) -> None:
        if token is None:
            return reply.error(401, None, "Invalid username or password.")
        namespace = request.get("organization") or self.users[token]
        repo_type = request.get("type") or "model"
        repo_id = f"{namespace}/{request['name']}"
        url = f"{self.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        if namespace != self.users[token]:
            return reply.error(403, None, f"You don't have the rights to create a {repo_type} under the namespace "
                               f"\"{namespace}\"")
        if (repo_type, repo_id) in self.repos:
            return reply.json(409, {"error": f"You already created this {repo_type} repo", "url": url})
        private = request.get("visibility") == "private" or bool(request.get("private"))
        self.add_repo(repo_type, repo_id, {}, private=private, owner_token=token)
        reply.json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, reply: _Reply, request: dict[str, Any]) -> None:
        content: str = request["content"]
        if not content.startswith("---\n"):
            return reply.json(200, {"warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
        header = content[4:].split("\n---\n", 1)[0]
        try:
            metadata = yaml.safe_load(header) or {}
        except yaml.YAMLError as exc:
            return reply.json(400, {"errors": [{"message": f"Invalid YAML: {exc}"}]})
        errors = [{"message": problem} for problem in _model_index_problems(metadata.get("model-index"))]
        reply.json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _require_writer(self, reply: _Reply, repo: FakeRepo, token: str | None) -> None:
        if token not in repo.owner_tokens:
            reply.error(403, None, "You don't have the rights to write to this repository")
            raise _Abort

    def _preupload(self, reply: _Reply, repo: FakeRepo, revision: str, request: dict[str, Any],
                   token: str | None) -> None:
        self._require_writer(reply, repo, token)
        commit = self._commit_of(reply, repo, revision)
        existing = repo.commits[commit]
        files = []
        for item in request["files"]:
            lfs = repo.is_lfs(commit, item["path"], item["size"])
            old = existing.get(item["path"])
            oid = None if old is None else (hashlib.sha256(old).hexdigest() if lfs else git_blob_id(old))
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        reply.json(200, {"files": files, "commitOid": commit})

    def _lfs_batch(self, reply: _Reply, repo: FakeRepo, request: dict[str, Any], token: str | None) -> None:
        self._require_writer(reply, repo, token)
        objects = []
        for obj in request["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"},
                                    "verify": {"href": f"{self.url}/lfs-verify/{obj['oid']}"}}
            objects.append(entry)
        reply.json(200, {"transfer": "basic", "objects": objects})

    def _commit(self, reply: _Reply, repo: FakeRepo, revision: str, body: bytes, token: str | None) -> None:
        self._require_writer(reply, repo, token)
        if revision not in repo.branches:
            return reply.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        parent = repo.branches[revision]
        files = dict(repo.commits[parent])
        for line in body.decode().splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return reply.error(400, None, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = self.lfs_objects[value["oid"]]
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
        commit = self._new_commit_id(repo.repo_id)
        repo.commits[commit] = files
        repo.branches[revision] = commit
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        reply.json(200, {"success": True, "commitOid": commit, "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/"
                         f"commit/{commit}", "pullRequestUrl": None})

    def _branch(self, reply: _Reply, repo: FakeRepo, branch: str, request: dict[str, Any],
                token: str | None) -> None:
        self._require_writer(reply, repo, token)
        if branch in repo.branches:
            return reply.error(409, None, "Reference already exists")
        start = self._commit_of(reply, repo, request.get("startingPoint") or "main")
        repo.branches[branch] = start
        reply.json(200, {})


def _model_index_problems(model_index: Any) -> list[str]:
    """The structure the Hub's metadata validation requires of `model-index` (task, dataset, metrics)."""
    if model_index is None:
        return []
    problems = []
    for entry in model_index if isinstance(model_index, list) else [model_index]:
        for result in entry.get("results", []) if isinstance(entry, dict) else [None]:
            if not isinstance(result, dict) or not isinstance(result.get("task"), dict):
                problems.append('"model-index[0].results[0].task" is required')
                continue
            if not result["task"].get("type"):
                problems.append('"model-index[0].results[0].task.type" is required')
            dataset = result.get("dataset") or {}
            if not dataset.get("type") or not dataset.get("name"):
                problems.append('"model-index[0].results[0].dataset" needs type and name')
            for metric in result.get("metrics") or []:
                if "type" not in metric or "value" not in metric:
                    problems.append('"model-index[0].results[0].metrics" entries need type and value')
    return problems


class _Abort(Exception):
    """An error answer was sent; stop handling the request."""


class _Reply:
    def __init__(self, handler: BaseHTTPRequestHandler, head: bool, statuses: list[int]) -> None:
        self.handler = handler
        self.head = head
        self.statuses = statuses

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.statuses.append(status)
        self.handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.handler.send_header(key, value)
        self.handler.end_headers()
        if not self.head:
            self.handler.wfile.write(body)

    def send_truncated(self, body: bytes, headers: dict[str, str]) -> None:
        """Announce the whole body, send half of it and close: the client sees a connection cut short."""
        self.statuses.append(200)
        self.handler.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.handler.send_header(key, value)
        self.handler.end_headers()
        self.handler.wfile.write(body[: len(body) // 2])
        self.handler.wfile.flush()
        self.handler.close_connection = True

    def json(self, status: int, payload: Any) -> None:
        self.send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        extra["X-Error-Message"] = message
        self.send(status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json", **extra})
