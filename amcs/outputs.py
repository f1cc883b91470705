"""Where a command may write: one check, run before any input is read or model loaded.

Every command that writes (generate, export, filter, view, train, eval) names its outputs and its
inputs here, and :func:`check_output` refuses, with one line naming the option and the file:

- an output that is one of the inputs, or one of the files of an input run (a generate data file
  comes with its ``.meta.jsonl`` and its ``.lock``; ``amcs view run.meta.jsonl --out run.jsonl``
  must not replace the data file either). Each file an output writes beside itself (generate's
  meta and lock file, filter's summary) is compared too. Symlinks and hard links are seen through:
  paths are compared resolved, and by inode when both exist;
- an output that is not a regular file where a file is written (a FIFO would block the writer
  forever, a device such as /dev/null would take the bytes, or, when an output is renamed into
  place, be replaced), or not a folder where a folder is written.

It runs first because each command writes differently (truncate, append, rename over): only a
check before the first byte protects all of them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

META_SUFFIX = ".meta.jsonl"
# What `amcs eval` writes in its --out folder (amcs.evaluation): `amcs view` reads them.
EVAL_FILES = ("records.jsonl", "results.json", "results.md", "accuracy_vs_tokens.png")


class OutputPathError(ValueError):
    """An output path that must not be written; the message names the option and the file."""


def companions(data_path: str | Path) -> list[tuple[str, Path]]:
    """(role, path) of the files a generate run with data file ``data_path`` writes beside it:
    its meta file and its lock file."""
    from amcs.records import lock_path_for, meta_path_for

    return [("meta file", meta_path_for(data_path)), ("lock file", lock_path_for(data_path))]


def run_files(path: str | Path) -> list[tuple[str, Path]]:
    """(role, path) of the files of the generate run that ``path`` belongs to, whether it names
    the data file or its meta file: the data file, the meta file and the lock file."""
    path = Path(path)
    if path.name.endswith(META_SUFFIX):
        path = path.with_name(path.name[: -len(META_SUFFIX)] + ".jsonl")
    return [("data file", path), *companions(path)]


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once symlinks are resolved, or the
    same inode (a hard link) when both exist."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _protected(
    inputs: Iterable[str | Path | None], runs: Iterable[str | Path | None]
) -> Iterator[tuple[Path, str]]:
    """(path, what it is) of every existing file or folder an output must not replace."""
    for source in inputs:
        if source is None:
            continue
        path = Path(str(source)).expanduser()
        if path.exists():
            yield path, f"the input {'folder ' if path.is_dir() else ''}{source}"
    for source in runs:
        if source is None:
            continue
        given = Path(str(source)).expanduser()
        if given.exists():
            yield given, f"the input {source}"
        # A symlinked data file: the run's files lie beside the file it points to.
        for named in dict.fromkeys([given, Path(os.path.realpath(given))]):
            for role, path in run_files(named):
                if path.exists() and not same_file(path, given):
                    yield path, f"{path}, the {role} of the input {source}"


def check_output(
    option: str,
    path: str | Path,
    *,
    inputs: Iterable[str | Path | None] = (),
    runs: Iterable[str | Path | None] = (),
    beside: Sequence[tuple[str, str | Path]] = (),
    folder: bool = False,
) -> None:
    """Refuse (OutputPathError) to let ``option`` write ``path``.

    ``inputs``: the files and folders the command reads (problem file, recipe, model folder;
    None and names that are no file, such as ``arith:100`` or a hub id, are skipped). ``runs``:
    input generate runs (their data or meta file), whose meta and lock file are protected too.
    ``beside``: (role, path) of the other files writing ``path`` creates or replaces (generate's
    meta and lock file; for a ``folder`` output, the files it writes inside). ``folder``: the
    output is a folder to write into, not a file.
    """
    path = Path(path)
    written = [("", path), *((role, Path(p)) for role, p in beside)]
    protected = list(_protected(inputs, runs))
    for role, target in written:
        via = f" (its {role} {target})" if role else ""
        for source, what in protected:
            if same_file(target, source):
                raise OutputPathError(
                    f"{option} {path}{via} would overwrite {what}; choose another {option}"
                )
    for role, target in written:
        try:
            mode = os.stat(target).st_mode
        except OSError:
            continue  # not there yet (or unreachable: writing it will say why, naming it)
        want_folder = folder and not role
        if stat.S_ISDIR(mode) == want_folder and (want_folder or stat.S_ISREG(mode)):
            continue
        at = f"{option} {path}" + (f": its {role} {target}" if role else "")
        if want_folder:
            what = "a file" if stat.S_ISREG(mode) else _kind(mode)
            raise OutputPathError(f"{at} is {what}, not a folder; name a folder to write into")
        if stat.S_ISDIR(mode):
            raise OutputPathError(f"{at} is a directory: give a file name")
        raise OutputPathError(f"{at} is {_kind(mode)}, not a regular file; name a file to write")


def check_distinct(outputs: Sequence[tuple[str, str | Path | None]]) -> None:
    """Refuse two options naming one output file (the second write would replace the first)."""
    given = [(option, Path(p)) for option, p in outputs if p is not None]
    for i, (option, path) in enumerate(given):
        for other, other_path in given[i + 1 :]:
            if same_file(path, other_path):
                raise OutputPathError(
                    f"{option} {path} and {other} {other_path} name the same file; choose two files"
                )


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Give an OSError raised while writing ``path`` the file name it lacks: a write that fails
    (no space left on device, file too large) reports only its errno, and the user must learn
    which file it was."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise
