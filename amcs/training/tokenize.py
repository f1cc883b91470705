"""PRM rows -> token-classification features (TRL's stepwise convention), with the hard labels
re-derived from the rows' Monte-Carlo values at the configured threshold."""

from __future__ import annotations

from amcs.step_features import encode_steps
from amcs.steps import DEFAULT_SEPARATOR

IGNORE_INDEX = -100
SOFT_IGNORE = -1.0
# hard: the class value > threshold; soft: the MC value itself.
LABEL_KINDS = ("hard", "soft")


def _tokenizer_adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def relabel(row: dict, threshold: float) -> dict:
    """The row with its hard labels re-derived from its MC values: label = value > threshold,
    as the search labels steps (``SearchConfig.threshold``), so a PRM can be trained at another
    threshold than the data was searched at. A step whose value is null (never measured, or
    overruled by a correct completion through it) keeps its label. Rows without values keep
    their labels at threshold 0 (the convention of MC data: any correct rollout) and are an
    error at any other threshold, which they cannot honour. Returns a new row when labels
    change; the input is never modified."""
    values = row.get("values")
    if values is None:
        if threshold != 0:
            raise ValueError(
                f"threshold={threshold:g} re-derives hard labels from MC values, but the row has "
                "labels only (no 'values'; Math-Shepherd, PRM800K and plain TRL data have none): "
                "use threshold 0 or amcs data"
            )
        return row
    old = row.get("labels")
    if old is None and None in values:
        raise ValueError("a row with unmeasured (null) values needs 'labels'")
    if old is not None and len(old) != len(values):
        raise ValueError("'labels' and 'values' differ in length")
    # The loaders refuse these by file and line; rows built in code get the same rule here, as
    # NaN > threshold is false and would make a "-" label without a word.
    if any(v is not None and not 0 <= float(v) <= 1 for v in values):
        raise ValueError("values must be MC values in [0, 1] or null (NaN and inf are not)")
    labels = [
        bool(old[i]) if value is None else float(value) > threshold
        for i, value in enumerate(values)
    ]
    return row if labels == old else {**row, "labels": labels}


def tokenize_prm_row(
    row: dict,
    tokenizer,
    separator: str = DEFAULT_SEPARATOR,
    max_length: int | None = None,
    labels: str = "hard",
    step_inputs: bool = False,
) -> dict | None:
    """Tokenize one PRM row into token-classification inputs (TRL's PRM convention).

    ``input_ids`` = [BOS if the tokenizer adds one by default] + ids(prompt) + for each step
    ids(step + separator); each piece is tokenized on its own (no special tokens) and the ids are
    concatenated, so step boundaries are exact token boundaries.

    Labels: the label of step i sits on the LAST token of ``step_i + separator``; every other
    position holds -100 (ignored). Class 1 = step correct, class 0 = step wrong.

    - ``labels="hard"``: ``labels[pos]`` = 1 if ``row["labels"][i]`` else 0.
    - ``labels="soft"``: ``soft_labels`` (floats aligned with ``input_ids``) holds the target
      P(correct) ``row["values"][i]`` in [0, 1] at label positions and -1.0 elsewhere; ``labels``
      still holds the hard class (value >= 0.5 when the row has no ``labels``) for metrics.

    Truncation never drops a label silently: if the sequence is longer than ``max_length`` it is
    cut at the last step boundary that fits (the kept steps keep their labels); when not even the
    first step fits, the row is dropped and ``None`` is returned. ``n_steps_kept`` reports how
    many steps survived (``n_steps`` the original count).

    ``step_inputs`` (policy-feature PRMs, :mod:`amcs.step_features`): the sequence is the one
    the policy saw (:func:`amcs.step_features.encode_steps`: its prompt, then the steps), and
    ``step_owner`` / ``step_separator`` say which step each token belongs to; labels sit on the
    same last tokens.
    """
    if labels not in LABEL_KINDS:
        raise ValueError(f"labels must be one of {', '.join(LABEL_KINDS)}, got {labels!r}")
    steps = list(row["completions"])
    if labels == "soft":
        if "values" not in row:
            raise ValueError(
                "labels='soft' needs MC values ('values') in every row (amcs data has them)"
            )
        # None: a step whose MC was not measured; masked out of the soft loss.
        values = [None if v is None else float(v) for v in row["values"]]
        if len(values) != len(steps):
            raise ValueError("'values' and 'completions' differ in length")
        if any(v is not None and not 0.0 <= v <= 1.0 for v in values):
            raise ValueError("soft values must lie in [0, 1]")
        if "labels" not in row and None in values:
            raise ValueError("a row with unmeasured (null) values needs 'labels'")
        hard = [bool(b) for b in row["labels"]] if "labels" in row else [v >= 0.5 for v in values]
    else:
        values = None
        hard = [bool(b) for b in row["labels"]]
    if len(hard) != len(steps):
        raise ValueError("'labels' and 'completions' differ in length")

    if step_inputs:
        return _policy_sequence(
            row["prompt"], steps, hard, values, tokenizer, separator, max_length
        )

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    input_ids: list[int] = []
    if _tokenizer_adds_bos(tokenizer):
        input_ids.append(tokenizer.bos_token_id)
    input_ids += encode(row["prompt"])
    label_ids = [IGNORE_INDEX] * len(input_ids)
    soft = [SOFT_IGNORE] * len(input_ids)
    kept = 0
    for i, step in enumerate(steps):
        piece = encode(step + separator)
        if not piece:
            raise ValueError(f"step {i} tokenizes to nothing")
        if max_length is not None and len(input_ids) + len(piece) > max_length:
            break
        input_ids += piece
        label_ids += [IGNORE_INDEX] * (len(piece) - 1) + [1 if hard[i] else 0]
        soft += [SOFT_IGNORE] * (len(piece) - 1) + [
            values[i] if values is not None and values[i] is not None else SOFT_IGNORE
        ]
        kept += 1
    if kept == 0 and steps:
        return None
    out = {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": label_ids,
        "n_steps_kept": kept,
        "n_steps": len(steps),
    }
    if labels == "soft":
        out["soft_labels"] = soft
    return out


def _policy_sequence(prompt, steps, hard, values, tokenizer, separator, max_length) -> dict | None:
    """tokenize_prm_row's features on the policy's own sequence, with the step inputs."""
    encoded = encode_steps(tokenizer, prompt, steps, separator, max_length)
    if encoded["kept"] == 0 and steps:
        return None
    width = len(encoded["input_ids"])
    label_ids = [IGNORE_INDEX] * width
    soft = [SOFT_IGNORE] * width
    for i, position in enumerate(encoded["positions"]):
        label_ids[position] = 1 if hard[i] else 0
        if values is not None and values[i] is not None:
            soft[position] = values[i]
    out = {
        "input_ids": encoded["input_ids"],
        "attention_mask": [1] * width,
        "labels": label_ids,
        "step_owner": encoded["step_owner"],
        "step_separator": encoded["step_separator"],
        "n_steps_kept": encoded["kept"],
        "n_steps": len(steps),
    }
    if values is not None:
        out["soft_labels"] = soft
    return out


def tokenize_rows(rows: list[dict], tokenizer, config) -> tuple[list[dict], dict[str, int]]:
    """Features of ``rows`` for training with ``config`` (a PRMTrainingConfig): labels
    re-derived at ``config.threshold`` (:func:`relabel`), then :func:`tokenize_prm_row` with its
    separator, max_length and label kind; each feature's ``problem`` is its row's prompt.
    Returns the features and the truncation counts
    (rows_dropped: not even the first step fit; rows_truncated; steps_dropped). A bad row is a
    ValueError naming its index."""
    features: list[dict] = []
    counts = {"rows_dropped": 0, "rows_truncated": 0, "steps_dropped": 0}
    for index, row in enumerate(rows):
        try:
            feature = tokenize_prm_row(
                relabel(row, config.threshold),
                tokenizer,
                config.separator,
                config.max_length,
                config.labels,
                step_inputs=config.policy_features,
            )
        except ValueError as exc:
            raise ValueError(f"training row {index}: {exc}") from None
        if feature is None:
            counts["rows_dropped"] += 1
            counts["steps_dropped"] += len(row["completions"])
            continue
        if feature["n_steps_kept"] < feature["n_steps"]:
            counts["rows_truncated"] += 1
            counts["steps_dropped"] += feature["n_steps"] - feature["n_steps_kept"]
        feature["problem"] = row["prompt"]  # the train/eval split keeps a problem on one side
        features.append(feature)
    return features, counts
