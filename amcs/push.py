"""Publishing to the Hugging Face Hub: what a folder is, and the upload itself.

Two kinds of folder are published: a dataset export (``amcs export -f hub``: a ``README.md``
card whose metadata has ``configs``, and Parquet shards under ``data/``) and a trained PRM
(``amcs train``: ``config.json`` and ``amcs_prm.json`` beside the weights, and its model card).
:func:`folder_kind` tells them apart; :func:`check_push` refuses, with one line naming the
argument, everything that can be known wrong before the network is touched; :func:`upload` is the
one call that talks to the Hub (``huggingface_hub.create_repo`` + ``upload_folder``).
"""

from __future__ import annotations

import os
from pathlib import Path

from amcs.cards import CARD_FILE, read_card_metadata

REPO_TYPES = ("dataset", "model")
# Never uploaded: a clone's git folder, our staging folders and other hidden files.
IGNORED = [".*", ".*/**", "**/.*"]


class PushError(ValueError):
    """A push that cannot be done; the message names the folder, the repo id or the option."""


def folder_kind(folder: str | Path) -> str | None:
    """``"dataset"`` for an ``amcs export -f hub`` folder, ``"model"`` for an ``amcs train``
    folder, None for anything else."""
    from amcs.training.save import PRM_CONFIG_FILE

    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / PRM_CONFIG_FILE).is_file():
        return "model"
    card = folder / CARD_FILE
    if card.is_file() and any((folder / "data").glob("*.parquet")):
        try:
            metadata = read_card_metadata(card)
        except (OSError, ValueError):
            return None
        if isinstance(metadata, dict) and metadata.get("configs"):
            return "dataset"
    return None


def check_push(folder: str | Path, repo_id: str, repo_type: str | None) -> str:
    """The repo type to push ``folder`` as (given, or what the folder is); PushError when the
    folder is neither kind, the given type contradicts it, or ``repo_id`` is no Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(folder)
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "not a folder"
        raise PushError(f"{folder}: {what}")
    if repo_type is not None and repo_type not in REPO_TYPES:
        raise PushError(f"--repo-type {repo_type!r}: choose one of {', '.join(REPO_TYPES)}")
    kind = folder_kind(folder)
    if kind is None:
        raise PushError(
            f"{folder} is neither a dataset export (amcs export -f hub: README.md and data/*."
            "parquet) nor a trained PRM (amcs train: config.json and amcs_prm.json)"
        )
    if repo_type is not None and repo_type != kind:
        raise PushError(f"--repo-type {repo_type}: {folder} is a {kind} folder")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"REPO_ID {repo_id!r} is not a Hub repo id ({exc})") from None
    if "/" not in repo_id:
        raise PushError(f"REPO_ID {repo_id!r}: name the owner too (user/name or org/name)")
    return kind


def resolve_token(token: str | None) -> str:
    """``token``, else HF_TOKEN, else the token ``hf auth login`` stored; PushError when none."""
    from huggingface_hub import get_token

    found = token or os.environ.get("HF_TOKEN") or get_token()
    if not found:
        raise PushError("no Hub token: pass --token, set HF_TOKEN, or run `hf auth login`")
    return found


def upload(folder: Path, repo_id: str, repo_type: str, *, private: bool, token: str) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; return the commit URL.
    The only function that talks to the Hub (tests do not run it: there is no Hub here)."""
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo_id, repo_type=repo_type, private=private, token=token, exist_ok=True)
    commit = upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        token=token,
        ignore_patterns=IGNORED,
        commit_message=f"amcs push: {folder.name}",
    )
    return str(getattr(commit, "commit_url", commit))
