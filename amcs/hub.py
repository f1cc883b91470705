"""Sources given by name: a Hugging Face dataset or model, or a local path that does not exist.

``problems`` and ``prm_data`` accept either a local file or a hub dataset name. Two things go wrong
with a plain ``datasets.load_dataset(name)``:

- a mistyped local path (``data/gsm8k``, ``./problems``) is sent to the hub, and the user learns
  that a repository id is invalid instead of that the file does not exist;
- with the hub unreachable, huggingface_hub retries each request with backoff for about half a
  minute before it fails.

``looks_like_local_path`` catches the first: a name that a hub id cannot be (it starts with ``.``,
``~`` or ``/``, has more than one ``/``, a backslash or a space), or whose directory part exists
here, is a local path, and its absence is a "no such file" error. ``load_hub_dataset`` avoids the
second: it first asks the hub endpoint for any HTTP answer (2 s), and when none comes it loads in
offline mode, which reads the local datasets cache and fails at once when the dataset is not
there. ``HF_HUB_OFFLINE=1`` skips the check.

A hub id (:func:`is_hub_id`, the one rule for datasets and models) is ``name`` or
``namespace/name``, ASCII letters, digits, ``-``, ``_`` and ``.``, each part starting with a letter
or digit. Checkpoints (:func:`resolve_checkpoint`: a PRM, a policy) need the namespace: a bare word
that is not a local directory is taken for a mistyped path, not sent to the hub.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A hub id: "name" or "namespace/name"; letters, digits, "-", "_" and ".".
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$", re.ASCII)
PROBE_SECONDS = 2.0
log = logging.getLogger(__name__)


class HubDatasetError(ValueError):
    """A name that is neither a local file nor a loadable hub dataset; the message says which."""


def looks_like_local_path(name: str) -> bool:
    """Whether ``name`` (without a ``:split`` suffix) must mean a local path, not a hub id."""
    if name.startswith((".", "~", "/")) or "\\" in name or (os.altsep and os.altsep in name):
        return True
    if not is_hub_id(name):
        return True
    return "/" in name and Path(name).parent.is_dir()


def is_hub_id(name: str, *, namespaced: bool = False) -> bool:
    """Whether ``name`` can be a hub id (module docstring); with ``namespaced``, only
    ``namespace/name``."""
    return bool(HUB_ID.match(name)) and (not namespaced or "/" in name)


def resolve_checkpoint(path: str | Path, what: str = "PRM") -> Path:
    """A local directory as is; a hub id ``namespace/name`` downloaded to the local cache (needs
    the hub, or a cache that already holds it). Anything else: ValueError naming it (and
    ``what`` it should have been)."""
    local = Path(path).expanduser()
    if local.exists():
        return local
    if is_hub_id(str(path), namespaced=True):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(str(path)))
        except Exception as exc:  # noqa: BLE001 - offline, gated, missing: say which
            raise ValueError(f"cannot fetch {what} {path} from the hub: {exc}") from exc
    raise ValueError(f"{path}: no such {what} directory")


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub endpoint (``HF_ENDPOINT``) answers any HTTP request within ``timeout``.

    The request runs in a daemon thread so that a hanging DNS lookup, which no socket timeout
    bounds, cannot hold the caller longer than ``timeout``.
    """
    import httpx
    from huggingface_hub import constants

    answered: list[bool] = []

    def probe() -> None:
        try:
            httpx.head(constants.ENDPOINT, timeout=timeout)
            answered.append(True)
        except httpx.HTTPError:
            answered.append(False)

    thread = threading.Thread(target=probe, name="amcs-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answered and answered[0])


@contextmanager
def _offline_mode() -> Iterator[None]:
    """Offline mode for this process while the block runs.

    ``HF_HUB_OFFLINE=1`` sets these two flags when datasets and huggingface_hub are imported;
    both libraries read them at call time, so setting them here has the same effect.
    """
    import datasets.config
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    verbosity = datasets.logging.get_verbosity()
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    # datasets warns in two lines that it uses the cache; load_hub_dataset says so in one.
    datasets.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved
        datasets.logging.set_verbosity(verbosity)


def load_hub_dataset(name: str, split: str, config: str | None = None):
    """``datasets.load_dataset(name, config, split=split)``, from the local cache when the hub is
    down (``config``: the dataset's configuration, e.g. GSM8K's "main"; None for its default).

    Raises HubDatasetError with one line naming ``name`` when the dataset cannot be loaded.
    """
    import datasets
    from huggingface_hub import constants

    offline = bool(datasets.config.HF_HUB_OFFLINE)
    why = "HF_HUB_OFFLINE is set"
    if not offline and not hub_reachable():
        offline, why = True, f"the hub at {constants.ENDPOINT} cannot be reached"
    try:
        if not offline:
            return datasets.load_dataset(name, config, split=split)
        with _offline_mode():
            dataset = datasets.load_dataset(name, config, split=split)
        log.warning("%s: loaded from the local Hugging Face cache (%s)", name, why)
        return dataset
    except (ConnectionError, FileNotFoundError) as exc:
        if offline:  # offline, either error means: not in the cache
            raise HubDatasetError(
                f"{name}: no such file, and no Hugging Face dataset of that name in the local "
                f"cache ({why})"
            ) from None
        failure = exc
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear line
        failure = exc
    detail = " ".join(str(failure).split())  # datasets' messages span lines
    raise HubDatasetError(
        f"{name}: no such file, and loading it as a Hugging Face dataset "
        f"({'' if config is None else f'configuration {config!r}, '}split {split!r}) "
        f"failed: {type(failure).__name__}: {detail}"
    )
