"""`companion models pull ORG/NAME[@REVISION]`: a Hugging Face model into the store, verified.

    from models.hub import pull
    info = pull("Qwen/Qwen2.5-0.5B-Instruct")          # -> base/qwen2.5-0.5b-instruct, version 0.1.0
    info = pull("Qwen/Qwen2.5-0.5B-Instruct@a1b2c3d")  # a branch, tag or commit

What it does, with `huggingface_hub` (so `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE` and the
progress bars behave as in every Hugging Face tool):

1. Resolves the revision to its commit (`HfApi.model_info`) and lists the repository's files.
2. Picks what a companion needs and nothing that could run code: safetensors weights (and their
   index), `config.json`, `generation_config.json`, the tokenizer files, the chat template, the
   licence and the model card. A repository whose weights are only pickles (`.bin`, `.pt`, ...)
   is refused, naming the files: this project never unpickles anything.
3. Downloads them at that pinned commit into `COMPANION_HOME/downloads/ORG--NAME/COMMIT/`.
   An interrupted pull resumes there (`huggingface_hub` keeps the partial files), and the
   folder is removed once the model is in the store.
4. Writes `source.json` (endpoint, repository, requested revision, commit, files), checks the
   safetensors headers (`check_safe_files`), and publishes the folder as a new version of
   `base/NAME` (`ModelVersionControl.create_version`, lineage `{"hub": ...}`, made current);
   the store adds the `manifest.json` (sha256 of every file) that every load verifies.

The model is then a store-only entry: `companion run NAME`, `-m NAME`, or `path: store:base/NAME`
in a config.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from models.errors import CompanionError
from models.integrity import UNSAFE_SUFFIXES, check_safe_files
from models.store import validate_name

__all__ = ["KEEP_PATTERNS", "HubError", "PullPlan", "default_name", "is_repo_id", "parse_repo", "plan_pull", "pull"]

#: Files a pulled model keeps (fnmatch patterns on the repository path).
KEEP_PATTERNS = (
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
    "LICENSE", "LICENSE.*", "README.md", "adapter_config.json",
)  # fmt: skip

_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class HubError(CompanionError):
    """A model could not be pulled (unknown repository or revision, offline, unsafe files)."""


@dataclass
class PullPlan:
    """What `pull` will fetch: the repository, its commit, and the files kept."""

    repo: str
    requested: str
    commit: str
    files: list[str]
    skipped: list[str] = field(default_factory=list)
    endpoint: str = ""


def is_repo_id(spec: str) -> bool:
    """Whether `spec` has the shape of `ORG/NAME[@REVISION]` (it may still not exist)."""
    repo = spec.strip().partition("@")[0]
    return bool(_REPO.fullmatch(repo)) and ".." not in repo


def parse_repo(spec: str) -> tuple[str, str]:
    """`("ORG/NAME", revision)` from `ORG/NAME[@REVISION]` (revision "main" by default)."""
    repo, _, rev = spec.strip().partition("@")
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise HubError(f"{spec!r} is not a Hugging Face model id: use ORG/NAME or ORG/NAME@REVISION")
    return repo, rev or "main"


def default_name(repo: str) -> str:
    """The store name of a pulled repository: its name, lower-cased ("Qwen/Qwen2.5-0.5B" ->
    "qwen2.5-0.5b")."""
    name = repo.split("/", 1)[1].lower()
    name = re.sub(r"[^a-z0-9_.-]", "-", name).strip(".-") or "model"
    return validate_name(name[:64])


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _hub_error(exc: Exception, repo: str, revision: str, endpoint: str) -> HubError:
    """One clear sentence for each way the Hub can fail."""
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return HubError(f"cannot pull {repo}: HF_HUB_OFFLINE is set (unset it, or copy the model folder and use it)")
    if isinstance(exc, errors.GatedRepoError):
        return HubError(f"{repo} is gated: accept its licence on the Hub, then set HF_TOKEN and pull again")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{repo} has no revision {revision!r} on {endpoint}")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"no model {repo} on {endpoint} (or it is private: set HF_TOKEN)")
    if isinstance(exc, errors.EntryNotFoundError):
        return HubError(f"{repo}@{revision}: a listed file is missing on {endpoint} ({exc})")
    return HubError(f"cannot reach {endpoint} to pull {repo} ({type(exc).__name__}: {exc}); offline?")


def _hub_failures() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the network or the server says no (its HTTP client is
    `httpx2` in huggingface_hub 2.x, `httpx` before)."""
    import importlib

    from huggingface_hub import errors

    found: list[type[BaseException]] = [errors.HfHubHTTPError, errors.OfflineModeIsEnabled, OSError, ValueError]
    for client in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(client).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def plan_pull(spec: str, *, endpoint: str | None = None, token: str | None = None) -> PullPlan:
    """Resolve `spec` to a commit and choose its files (no download yet)."""
    from huggingface_hub import HfApi

    repo, revision = parse_repo(spec)
    url = _endpoint(endpoint)
    try:
        info = HfApi(endpoint=url, token=token).model_info(repo, revision=revision)
    except _hub_failures() as exc:
        raise _hub_error(exc, repo, revision, url) from None
    names = sorted(s.rfilename for s in (info.siblings or []))
    keep = [n for n in names if any(fnmatch(Path(n).name, p) for p in KEEP_PATTERNS) and "/" not in n]
    pickles = [n for n in names if Path(n).suffix.lower() in UNSAFE_SUFFIXES]
    if not any(n.endswith(".safetensors") for n in keep):
        if pickles:
            raise HubError(
                f"{repo}@{revision} has only pickled weights ({', '.join(pickles[:6])}"
                f"{', ...' if len(pickles) > 6 else ''}): refusing, since loading them could run code. "
                "Look for a safetensors version of this model."
            )
        ggufs = [n for n in names if n.endswith(".gguf")]
        if ggufs:
            raise HubError(
                f"{repo} holds GGUF files ({', '.join(ggufs[:4])}): download one and run it with "
                "`companion run FILE.gguf`"
            )
        raise HubError(f"{repo}@{revision} has no safetensors weights")
    if "config.json" not in keep:
        raise HubError(f"{repo}@{revision} has no config.json: not a transformers model")
    skipped = [n for n in names if n not in keep]
    return PullPlan(repo, revision, str(info.sha), keep, skipped, url)


def pull(
    spec: str,
    *,
    name: str | None = None,
    category: str = "base",
    endpoint: str | None = None,
    token: str | None = None,
    progress: bool = True,
    context: Any = None,
) -> Any:
    """Pull `spec` (see the module doc) into the store; returns the new `VersionInfo`."""
    from models.context import current
    from models.lifecycle.version_control import ModelVersionControl

    ctx = context or current()
    plan = plan_pull(spec, endpoint=endpoint, token=token)
    store_name = validate_name(name) if name else default_name(plan.repo)
    home = ctx.ensure_home()
    download = home / "downloads" / plan.repo.replace("/", "--") / plan.commit
    download.mkdir(parents=True, exist_ok=True)
    _download(plan, download, token, progress)
    source = {
        "hub": plan.endpoint,
        "repo": plan.repo,
        "requested_revision": plan.requested,
        "commit": plan.commit,
        "files": plan.files,
        "skipped": plan.skipped,
    }
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=home) as tmp:
        ready = Path(tmp) / store_name
        ready.mkdir()
        for rel in plan.files:
            src = download / rel
            if not src.is_file():
                raise HubError(f"{plan.repo}: {rel} did not download; pull again to resume")
            try:
                os.link(src, ready / rel)  # same disk: no second copy of the weights
            except OSError:
                shutil.copy2(src, ready / rel)
        (ready / "source.json").write_text(json.dumps(source, indent=1) + "\n")
        check_safe_files(ready)
        vc = ModelVersionControl(context=ctx)
        info = vc.create_version(
            f"{category}/{store_name}",
            f"pulled {plan.repo}@{plan.commit[:12]}",
            source=ready,
            lineage={"source": f"{plan.endpoint}/{plan.repo}@{plan.commit}", "source_kind": "hub", "hub": source},
        )
    shutil.rmtree(download, ignore_errors=True)
    _prune_empty(download.parent, home / "downloads")
    return info


def _download(plan: PullPlan, download: Path, token: str | None, progress: bool) -> None:
    """The plan's files at its pinned commit into `download` (what is already there is kept,
    so a second pull resumes); the hub's progress bars only when `progress`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        snapshot_download(
            plan.repo,
            revision=plan.commit,
            allow_patterns=plan.files,
            local_dir=download,
            endpoint=plan.endpoint,
            token=token,
        )
    except _hub_failures() as exc:
        raise _hub_error(exc, plan.repo, plan.requested, plan.endpoint) from None
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
