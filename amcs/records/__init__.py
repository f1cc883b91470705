"""The output files of ``amcs generate``: written by one process, resumable after a crash, and
never shortened unless they prove the bytes are theirs.

``--out data.jsonl`` writes two files:

- ``data.jsonl``: one line per labelled path (TRL's PRM format plus soft MC values; ``prompt`` is
  the bare question, ``policy_prompt`` the text the policy was given);
- ``data.meta.jsonl``: a header line with the run's fingerprint (method, model, seed, search
  config, problem source, shard, prompt), then one line per finished problem (status, stats, ``decoding``: deterministic or batched,
  search tree) ending with ``data_end``, the byte offset in data.jsonl where that problem's data
  lines end.

A problem is done when its meta line is on disk: data lines are fsynced first, then the meta line.
Both files are created at the first commit, so a run that stops before committing anything leaves
nothing behind.

Resume checks everything before it changes anything:

1. the meta file exists whenever the data file has bytes, and starts with a header;
2. the header's fingerprint equals this run's (a different config, model, seed or problem source
   is refused, naming what differs);
3. every ``data_end`` falls on a line boundary, in order, and the data lines between two offsets
   carry that meta line's problem id, as many as it says;
4. what lies after the last committed offset is data lines of problems not committed (a batch
   whose meta lines never made it), possibly ending in a torn line;
5. with the run's problems given (``problems=``; ``check_problems``), the committed problems are
   the run's first problems, in order, each with the question and answer it was committed with.

Then it cuts a torn last meta line, truncates data.jsonl to the last committed ``data_end`` and
reports the problems that finished ok; failed problems are retried (their earlier meta line stays,
and the retry's line comes later: the last line of a problem id wins). On any mismatch it raises
``OutputMismatchError`` and leaves both files as they were. An flock on ``data.jsonl.lock`` refuses
a second writer; the OS drops it when its process dies, and a clean close removes the file.

Modules: ``format`` (file names, line shapes, errors), ``fingerprint`` (what makes two runs the same
run), ``writer`` (``RecordWriter``), ``lock`` (the flock), ``resume`` (the checks above and the cut),
``reader`` (meta records, run header, data lines), ``budget`` (a run cut at a token budget). Sharding (``parse_shard``, ``shard_problems``)
lives in ``amcs.shards`` and is re-exported here.
"""

from amcs.records.budget import budget_cut, committed_tokens, within_budget
from amcs.records.fingerprint import ADDED_LATER, fingerprint_differences, run_fingerprint
from amcs.records.format import (
    HOW_TO_PROCEED,
    META_FORMAT,
    META_VERSION,
    PATH_KEYS,
    STATUSES,
    OutputError,
    OutputExistsError,
    OutputLockedError,
    OutputMismatchError,
    RecordFormatError,
    data_row_problem,
    is_data_row,
    lock_path_for,
    meta_path_for,
    values_problem,
)
from amcs.records.reader import (
    committed_end,
    read_data,
    read_meta,
    read_meta_numbered,
    read_run_header,
    recorded_search,
)
from amcs.records.writer import RecordWriter
from amcs.shards import parse_shard, shard_of, shard_problems

__all__ = [
    "ADDED_LATER",
    "HOW_TO_PROCEED",
    "META_FORMAT",
    "META_VERSION",
    "PATH_KEYS",
    "STATUSES",
    "OutputError",
    "OutputExistsError",
    "OutputLockedError",
    "OutputMismatchError",
    "RecordFormatError",
    "RecordWriter",
    "budget_cut",
    "committed_end",
    "committed_tokens",
    "data_row_problem",
    "fingerprint_differences",
    "is_data_row",
    "lock_path_for",
    "meta_path_for",
    "parse_shard",
    "read_data",
    "read_meta",
    "read_meta_numbered",
    "read_run_header",
    "recorded_search",
    "run_fingerprint",
    "shard_of",
    "shard_problems",
    "values_problem",
    "within_budget",
]
