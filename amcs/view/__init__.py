"""`amcs view`: a generate run or an eval folder as one self-contained HTML page, or served on a
loopback port with a run's problems read lazily (see amcs.view.run and amcs.view.server)."""

from amcs.view.evaldir import is_eval_dir, load_eval
from amcs.view.page import write_eval_page, write_run_page
from amcs.view.run import RunIndex, ViewError, problem_detail

__all__ = [
    "RunIndex",
    "ViewError",
    "is_eval_dir",
    "load_eval",
    "problem_detail",
    "write_eval_page",
    "write_run_page",
]
