"""Cards for what amcs makes and users share: a dataset card for ``amcs export -f hub``, a model
card for every ``amcs train`` output, and the environment block of an ``amcs eval`` report.

Each card is a ``README.md`` in the Hugging Face layout: YAML metadata between ``---`` lines, then
Markdown. Every number in a card is computed from the files it describes (the run's data lines
and meta records, the training metrics), never typed in; the license is left for the user to
fill in, because only they know the terms of their problems and policy model.

Dataset card counts (:class:`DataCounts`, :func:`run_summary`):

- problems = ok problems in the meta files (the last record of a retried problem wins), failed
  ones counted apart; paths = data rows; steps = sum of len(completions);
  "+" / "-" = steps whose label is true / false; measured = steps whose MC value is not null;
- rollouts, generated tokens, prompt tokens and search time = sums of the ok problems' meta
  ``stats`` (search time is summed over problems searched concurrently, so it is compute time,
  not the run's elapsed time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from amcs.records import meta_path_for, read_meta, read_run_header

CARD_FILE = "README.md"
# What every dataset card amcs writes says: a README.md without it is not ours to replace.
HUB_CARD_MARK = "exported with `amcs export -f hub`"
LICENSE_NOTE = (
    "No license is set: add a `license:` line to the YAML header (and check the terms of the "
    "problem source and of the policy or base model) before you publish."
)
# (upper bound exclusive, Hugging Face size category)
_SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
_STAT_SUMS = ("rollouts", "tokens", "prompt_tokens", "wall_time")


def size_category(rows: int) -> str:
    """The Hugging Face ``size_categories`` value for ``rows`` rows."""
    return next((name for bound, name in _SIZE_CATEGORIES if rows < bound), "n>1T")


def front_matter(metadata: dict[str, Any], comments: Sequence[str] = ()) -> str:
    """``---``-delimited YAML metadata; ``comments`` become ``#`` lines inside it (the license
    line the user fills in)."""
    body = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    return "---\n" + body + "".join(f"# {c}\n" for c in comments) + "---\n"


def read_card_metadata(path: str | Path) -> dict[str, Any]:
    """The YAML metadata of a card file ({} when it has none)."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    return yaml.safe_load(text[4:end]) or {} if end > 0 else {}


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    lines = ["| | |", "|---|---|"]
    for key, value in rows:
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines) + "\n"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_digest(fingerprint: dict) -> str:
    """A short stable name for a run's fingerprint (sha256 of its canonical JSON, 16 hex)."""
    text = json.dumps(fingerprint, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- dataset card -------------------------------------------------------------------------------


@dataclass
class DataCounts:
    """Counts of data rows, accumulated row by row while they are written."""

    paths: int = 0
    steps: int = 0
    positive: int = 0
    negative: int = 0
    measured: int = 0
    problems: set[str] = field(default_factory=set)

    def add(self, row: dict) -> None:
        labels = row["labels"]
        self.paths += 1
        self.steps += len(labels)
        self.positive += sum(bool(x) for x in labels)
        self.negative += sum(not x for x in labels)
        self.measured += sum(v is not None for v in row.get("values") or [])
        if row.get("problem_id") is not None:
            self.problems.add(str(row["problem_id"]))


@dataclass
class RunSummary:
    """What the meta files of the exported runs say: their fingerprints and problem counts."""

    fingerprints: list[tuple[str, dict]]  # (data file name, fingerprint) per run with a header
    ok: int = 0
    failed: int = 0
    stats: dict[str, float] = field(default_factory=dict)


def run_summary(data_paths: Sequence[str | Path]) -> RunSummary:
    """Fingerprints and problem statistics of the runs that wrote ``data_paths`` (a file without
    a meta file adds nothing)."""
    summary = RunSummary(fingerprints=[], stats=dict.fromkeys(_STAT_SUMS, 0))
    for data_path in data_paths:
        meta = meta_path_for(data_path)
        if not meta.is_file():
            continue
        header = read_run_header(meta)
        if header and isinstance(header.get("fingerprint"), dict):
            summary.fingerprints.append((Path(data_path).name, header["fingerprint"]))
        last = {record["problem_id"]: record for record in read_meta(meta)}
        for record in last.values():
            if record["status"] != "ok":
                summary.failed += 1
                continue
            summary.ok += 1
            stats = record.get("stats") if isinstance(record.get("stats"), dict) else {}
            for key in _STAT_SUMS:
                value = stats.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    summary.stats[key] += value
    summary.stats["wall_time"] = round(summary.stats["wall_time"], 1)
    return summary


def _distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def dataset_card(
    counts: DataCounts,
    summary: RunSummary,
    data_files: Sequence[str],
    columns: Sequence[str],
    sources: Sequence[str | Path],
) -> str:
    """The README.md of a hub export: metadata (task categories, size category, ``configs``
    naming ``data_files`` so ``datasets.load_dataset(folder)`` finds them; no license), then
    what the data is, its counts, how it was made, its columns and label rules, how to load it."""
    fingerprints = [fp for _, fp in summary.fingerprints]
    methods = _distinct(fp.get("method") for fp in fingerprints) or ["unknown"]
    models = _distinct(fp.get("model") for fp in fingerprints) or ["unknown"]
    problem_sources = _distinct(fp.get("problems") for fp in fingerprints) or ["unknown"]
    metadata = {
        "task_categories": ["text-classification", "token-classification"],
        "language": ["en"],
        "tags": ["process-reward-model", "prm", "process-supervision", "amcs", "trl"],
        "size_categories": [size_category(counts.paths)],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": list(data_files)}]}
        ],
    }
    head = front_matter(metadata, ["license: FILL IN (see the License section)"])
    title = (
        f"# Process supervision data: {', '.join(map(str, methods))} on "
        f"{', '.join(map(str, problem_sources))} with {', '.join(map(str, models))}\n\n"
    )
    intro = (
        "Step-labelled solutions (one row per labelled solution path) made by `amcs generate` "
        f"(Adaptive Monte Carlo Search process supervision) and {HUB_CARD_MARK} from "
        f"{', '.join(Path(s).name for s in sources)}.\n"
    )
    count_rows = [
        ("problems (finished ok)", summary.ok),
        ("problems failed (no rows)", summary.failed),
        ("problems with rows", len(counts.problems)),
        ("labelled paths (rows)", counts.paths),
        ("steps", counts.steps),
        ('"+" steps', counts.positive),
        ('"-" steps', counts.negative),
        ("steps with a measured MC value", counts.measured),
        ("rollouts", int(summary.stats["rollouts"])),
        ("generated tokens", int(summary.stats["tokens"])),
        ("prompt tokens", int(summary.stats["prompt_tokens"])),
        ("search time, summed over problems (s)", summary.stats["wall_time"]),
    ]
    made = []
    for name, fp in summary.fingerprints:
        search = fp.get("search") or {}
        setup = {k: fp.get(k) for k in ("method", "model", "problems", "seed", "shard", "prompt")}
        made.append(
            f"### {name} (run fingerprint {fingerprint_digest(fp)})\n\n"
            + _table((k, f"`{json.dumps(v, ensure_ascii=False)}`") for k, v in setup.items())
            + "\nSearch config:\n\n"
            + _table((k, f"`{json.dumps(v, ensure_ascii=False)}`") for k, v in search.items())
        )
    if not made:
        made.append("No meta file was found beside the data, so the search config is unknown.\n")
    thresholds = _distinct((fp.get("search") or {}).get("threshold", 0.0) for fp in fingerprints)
    threshold = ", ".join(f"{t:g}" for t in thresholds if isinstance(t, int | float)) or "0"
    sections = [
        title + intro,
        "## Counts\n\n" + _table(count_rows),
        "## How it was made\n\n" + "\n".join(made),
        "## Columns\n\n" + "".join(f"- `{c}`: {_COLUMN_HELP.get(c, '')}\n" for c in columns),
        "## Label rules\n\n" + _LABEL_RULES.format(threshold=threshold),
        "## Load it\n\n```python\nfrom datasets import load_dataset\n\n"
        'rows = load_dataset("REPO_ID_OR_THIS_FOLDER", split="train")\n'
        'print(rows[0]["completions"], rows[0]["labels"])\n```\n\n'
        "The rows are TRL's stepwise PRM format (`prompt`, `completions`, `labels`) plus the "
        "soft values; `amcs train --data REPO_ID` trains a PRM on them.\n",
        "## License\n\n" + LICENSE_NOTE + "\n",
    ]
    return head + "\n" + "\n".join(sections)


_COLUMN_HELP = {
    "prompt": "the problem as given to the search (the bare question)",
    "completions": "the solution's steps, in order",
    "labels": 'one label per step: true = "+" (a correct completion is reachable), false = "-"',
    "values": "the Monte Carlo value of each step prefix (fraction of correct rollouts), null "
    "where the prefix was not estimated",
    "rollouts": "rollouts behind each value (0 where the value is inherited or unmeasured)",
    "problem_id": "the problem's id in the problem source",
    "answer": "the reference final answer",
    "method": "the search method that labelled the path",
    "model": "the policy model that wrote the solutions and rollouts",
}
_LABEL_RULES = """\
- A step's MC value is the fraction of rollouts from its prefix (the question and the steps up
  to and including it) whose final answer is correct; the hard label is `value > {threshold}`.
- A truncated rollout (it hit `max_new_tokens`) counts as wrong for MC, but no step is labelled
  "-" by cutting it.
- An estimate from fewer than `k0` rollouts (the problem's rollout budget spent) never makes a
  "-" label; a prefix has one label per problem (the better-evidenced estimate wins).
- A path cut at its first "-" step ends there: the steps after the first error are not labelled.
- The reference is the policy's own Monte Carlo estimate, not a human judgement: a "-" step can
  be a correct step the policy rarely completes, a "+" step can be wrong.
"""


# --- model card ---------------------------------------------------------------------------------

# PRMTrainingConfig fields a model card never lists: where the Trainer ran, not how it trained.
_NOT_SETTINGS = {"output_dir", "logging_dir", "use_cpu", "disable_tqdm", "report_to"}


def changed_settings(config: Any) -> dict[str, Any]:
    """The fields of a dataclass config whose value differs from a default-built one of its
    class (the training config a card shows: what the user chose). Both go through the same
    ``__post_init__``, so values it fills in (TrainingArguments' derived fields) cancel out."""
    defaults = type(config)()
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.init
        and f.name not in _NOT_SETTINGS
        and getattr(config, f.name) != getattr(defaults, f.name)
    }


def data_file_facts(sources: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Per training source: its name, sha256 (a local file) and the run fingerprint digest of
    the amcs run that wrote it (when its meta file has a header); a hub dataset has its name."""
    facts = []
    for source in sources:
        path = Path(str(source)).expanduser()
        fact: dict[str, Any] = {"source": str(source)}
        if path.is_file():
            fact["sha256"] = sha256_file(path)
            meta = meta_path_for(path)
            header = read_run_header(meta) if meta.is_file() else None
            if header and isinstance(header.get("fingerprint"), dict):
                fact["run_fingerprint"] = fingerprint_digest(header["fingerprint"])
        facts.append(fact)
    return facts


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return "n/a" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def model_card(
    *,
    base: str,
    settings: dict[str, Any],
    prm_format: str,
    separator: str,
    labels: str,
    metrics: dict[str, Any],
    data: Sequence[dict[str, Any]],
    policy_features: bool = False,
) -> str:
    """The README.md of a trained PRM folder. ``settings``: the training config's changed
    fields; ``metrics``: ``train_prm``'s (held-out step accuracy and first-error F1);
    ``data``: :func:`data_file_facts` of its training sources."""
    local_base = Path(base).exists() or base.startswith(("/", ".", "~", "amcs/"))
    metadata: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "token-classification",
        "tags": ["process-reward-model", "prm", "amcs", "token-classification"],
    }
    if not local_base:
        metadata["base_model"] = base
    head = front_matter(metadata, ["license: FILL IN (the base model's license applies)"])
    data_lines = "\n".join(
        f"- `{d['source']}`"
        + (f": sha256 `{d['sha256']}`" if "sha256" in d else " (not a local file)")
        + (f", run fingerprint `{d['run_fingerprint']}`" if "run_fingerprint" in d else "")
        for d in data
    )
    evaluation = [
        ("held-out rows (problem-level split)", metrics.get("n_eval_rows")),
        ("held-out steps", metrics.get("eval_steps")),
        ("step accuracy (P(correct) > 0.5 vs label)", metrics.get("eval_step_accuracy")),
        ("first-error F1 (ProcessBench rule, threshold 0.5)", metrics.get("eval_f1")),
        ('a1: first error found, on paths with a "-"', metrics.get("eval_a1")),
        ('a2: no error claimed, on all-"+" paths', metrics.get("eval_a2")),
        ("held-out loss", metrics.get("eval_loss")),
        ("training rows", metrics.get("n_train_rows")),
        ("training loss", metrics.get("train_loss")),
        ("optimizer steps", metrics.get("train_steps")),
    ]
    settings_yaml = yaml.safe_dump(
        {k: _plain(v) for k, v in settings.items()}, sort_keys=True, allow_unicode=True
    )
    sections = [
        "# Process reward model trained with amcs\n\n"
        f"A step-level process reward model (PRM) fine-tuned from `{base}` by `amcs train`: "
        "for each step of a solution it gives P(step correct).\n",
        "## Format\n\n"
        + _table(
            [
                ("base model", f"`{base}`"),
                ("PRM format", prm_format),
                ("architecture", "AutoModelForTokenClassification, 2 labels (1 = step correct)"),
                ("step separator", f"`{json.dumps(separator)}`"),
                ("labels trained on", labels),
            ]
        )
        + "\nInput: the question's tokens, then for each step the tokens of `step + separator`, "
        "each piece tokenized on its own; a step's score is softmax(logits)[1] at the last "
        "token of its `step + separator` (`amcs_prm.json` records the separator).\n",
        "## Training data\n\n" + (data_lines or "- (rows given in code)") + "\n",
        "## Training config (fields changed from amcs's defaults)\n\n```yaml\n"
        + (settings_yaml if settings else "{}\n")
        + "```\n",
        "## Held-out evaluation\n\n"
        + _table((k, _number(v)) for k, v in evaluation)
        + "\nThe held-out problems never appear in training. The reference is the training "
        "data's own labels (Monte Carlo estimates for amcs data), not human labels.\n",
        _USAGE_AMCS
        + (
            _USAGE_POLICY_FEATURES
            if policy_features
            else _USAGE_TRANSFORMERS.format(separator=json.dumps(separator))
        ),
        "## License\n\n" + LICENSE_NOTE + "\n",
    ]
    return head + "\n" + "\n".join(sections)


def _plain(value: Any) -> Any:
    """A config value as YAML can write it (enums by value, others as text)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(getattr(value, "value", value))


_USAGE_AMCS = """\
## Use it

With amcs (best-of-N, beam search, ProcessBench-style step F1):

```bash
amcs eval --prm THIS_FOLDER --problems arith-heldout:100 --strategies best-of-n --n 8
amcs eval steps --prm THIS_FOLDER --data steps.jsonl
```
"""
_USAGE_TRANSFORMERS = """
With transformers (the inputs amcs builds; THIS_FOLDER is this repository or folder):

```python
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

prm = AutoModelForTokenClassification.from_pretrained("THIS_FOLDER").eval()
tok = AutoTokenizer.from_pretrained("THIS_FOLDER")
separator = {separator}
question, steps = "What is 2 + 3 * 4?", ["3 * 4 = 12", "2 + 12 = 14"]
bos = tok("a")["input_ids"][:1]  # the BOS token, where the tokenizer adds one
ids = (bos if bos == [tok.bos_token_id] else []) + tok(question, add_special_tokens=False)["input_ids"]
ends = []
for step in steps:
    ids += tok(step + separator, add_special_tokens=False)["input_ids"]
    ends.append(len(ids) - 1)
with torch.no_grad():
    p_correct = prm(torch.tensor([ids])).logits[0].float().softmax(-1)[:, 1]
scores = [float(p_correct[i]) for i in ends]  # P(step correct) per step
print(scores)
```

With vLLM (checked by amcs's tests on vLLM 0.32's CPU build): its pooling runner serves this
folder as it is (`vllm serve THIS_FOLDER --runner pooling`), and amcs scores with it over the
network: `amcs eval --prm http://HOST:PORT` (the same URL for `amcs eval steps --prm` and
`amcs filter --judge`). Other clients send the token ids built as above to `POST /pooling`
(`"task": "token_classify"`) and read class 1 at each step's last token.
"""
_USAGE_POLICY_FEATURES = """
This PRM is a frozen base model plus a small step head (`step_head.safetensors`) that reads the
base's token probabilities: it loads with amcs (`amcs.prm.load_prm`), not as a plain
transformers model, and vLLM does not serve it.
"""


def prm_card(base: str, config: Any, metrics: dict[str, Any], data_files: Sequence[str]) -> str:
    """The model card of a PRM that ``amcs.training.train_prm`` trained with ``config`` (a
    PRMTrainingConfig) and reported ``metrics`` on, from ``data_files``."""
    if config.policy_features:
        prm_format = "token-cls with policy features (frozen base + step head, amcs.step_features)"
    else:
        prm_format = "token-cls (amcs train)" + (" with LoRA merged in" if config.uses_lora else "")
    from amcs.assets import TINY_POLICY, TINY_POLICY_NAME

    if Path(base).resolve() == TINY_POLICY.resolve():
        base = f"{TINY_POLICY_NAME} (bundled with amcs)"
    return model_card(
        base=str(base),
        settings=changed_settings(config),
        prm_format=prm_format,
        separator=config.separator,
        labels=config.labels,
        metrics=metrics,
        data=data_file_facts(data_files),
        policy_features=bool(config.policy_features),
    )


def write_model_card(folder: str | Path, card: str | None) -> Path | None:
    """Write ``card`` as ``folder``/README.md (nothing when ``card`` is None)."""
    if card is None:
        return None
    path = Path(folder) / CARD_FILE
    path.write_text(card, encoding="utf-8")
    return path


# --- eval environment ---------------------------------------------------------------------------


def environment(settings: dict[str, Any]) -> dict[str, Any]:
    """Where an evaluation ran, for a report others read: amcs, torch and transformers versions,
    the policy model, PRM and backend from ``settings``, the device, Python, and the date."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    try:
        amcs_version = version("amcs-prm")
    except PackageNotFoundError:
        amcs_version = "unknown (not installed)"
    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    else:
        device = f"cpu: {platform.processor() or platform.machine()}"
    return {
        "amcs": amcs_version,
        "policy_model": settings.get("model"),
        "prm": settings.get("prm"),
        "backend": settings.get("backend"),
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def environment_markdown(env: dict[str, Any]) -> str:
    """The environment block of results.md."""
    return "## Environment\n\n" + _table(
        (k, "—" if v is None else f"`{v}`") for k, v in env.items()
    )
