"""`amcs push`: upload a dataset export or a trained PRM to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import fail


def push_command(
    folder: Path = typer.Argument(
        ..., help="A folder from `amcs export -f hub` (a dataset) or `amcs train` (a PRM)."
    ),
    repo_id: str = typer.Argument(..., help="The Hub repository, user/name or org/name."),
    repo_type: str | None = typer.Option(
        None,
        "--repo-type",
        help="dataset | model. [default: what FOLDER is: a dataset export or a trained PRM]",
    ),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    token: str | None = typer.Option(
        None, "--token", help="Hub token with write access. [default: HF_TOKEN, or your login]"
    ),
) -> None:
    """Upload FOLDER to the Hub as REPO_ID (created when missing), with its card (README.md).

    Everything that can be checked here is checked before the network is touched: FOLDER is a
    dataset export or a trained PRM, --repo-type agrees with it, REPO_ID is a repo id, a token
    is at hand. Hidden files (a clone's .git) are not uploaded.

    Examples:

      amcs export amcs-data.jsonl -f hub --out my-data && amcs push my-data me/my-prm-data

      amcs push tiny-prm me/tiny-prm --private
    """
    from amcs.push import PushError, check_push, resolve_token, upload

    try:
        kind = check_push(folder, repo_id, repo_type)
        key = resolve_token(token)
    except PushError as exc:
        fail(str(exc))
    try:
        url = upload(folder, repo_id, kind, private=private, token=key)
    except Exception as exc:  # noqa: BLE001 - the Hub's errors (HTTP, network) in one line
        fail(f"push of {folder} to {kind} {repo_id} failed: {' '.join(str(exc).split())}")
    typer.echo(f"pushed {folder} to {kind} repository {repo_id}: {url}", err=True)
