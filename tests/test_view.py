"""`amcs view` in a real headless Chromium: pages made from a real `amcs generate` run and a real
`amcs eval` folder (tiny policy, tiny PRM), checked against counts computed from the files.

Browser tests skip, with the reason, when Playwright or a Chromium binary is missing; `.ci/run`
installs Debian's chromium so CI runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amcs.backends.hf import HFBackend
from amcs.domains import arith
from amcs.grading import Grader, answers_match_fast
from amcs.problems import arith_problems
from amcs.records import meta_path_for, read_data, read_meta
from amcs.scheduler import generate_to_file
from amcs.search import make_config
from amcs.view.run import RunIndex, problem_detail, split_node_text
from cli.main import app

SMALL = {"max_new_tokens": 120, "rollout_budget": 40, "max_search_count": 3}
FAIL_PROBLEM = 2  # index of the problem whose requests fail (retries 0): a real failed record
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _off_loop(fn):
    """fn() in a fresh thread: Playwright's sync API keeps an event loop running on this one,
    and asyncio.run (the engine, `amcs eval`) refuses to start inside it."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _chromium() -> str | None:
    for name in (os.environ.get("AMCS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (uv sync installs the dev group)")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set AMCS_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # The page must need nothing from the network: any request but the page itself fails.
    pg.route(
        "**/*", lambda route: route.abort() if _external(route.request.url) else route.continue_()
    )
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def _external(url: str) -> bool:
    return not (url.startswith("file://") or url.startswith("http://127.0.0.1:"))


# --- a real generate run and a real eval folder ------------------------------------------------


class FailOne:
    """The tiny policy, except that every request for one question fails."""

    def __init__(self, inner, question: str) -> None:
        self.inner, self.tokenizer, self.question = inner, inner.tokenizer, question

    async def sample(self, prompt_ids, n, params):
        if self.question in self.tokenizer.decode(prompt_ids):
            # Not a ConnectionError: that means "server down, wait for it" to the engine.
            raise RuntimeError("injected fault for the viewer test")
        return await self.inner.sample(prompt_ids, n, params)

    async def aclose(self):
        pass


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """5 arithmetic problems through the real engine; one of them fails."""
    out = tmp_path_factory.mktemp("run") / "data.jsonl"
    problems = arith_problems(5, seed=0)
    backend = HFBackend(max_batch_size=64)

    async def go():
        try:
            async with Grader() as grader:
                await generate_to_file(
                    problems,
                    FailOne(backend, problems[FAIL_PROBLEM].question),
                    grader,
                    make_config("amcs", **SMALL),
                    out,
                    model_name="tiny",
                    concurrency=8,
                    retries=0,
                )
        finally:
            await backend.aclose()

    _off_loop(lambda: asyncio.run(go()))
    return out


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory) -> Path:
    """3 arithmetic problems through the real engine with their rollouts kept."""
    out = tmp_path_factory.mktemp("kept") / "data.jsonl"
    backend = HFBackend(max_batch_size=64)

    async def go():
        try:
            async with Grader() as grader:
                await generate_to_file(
                    arith_problems(3, seed=4),
                    backend,
                    grader,
                    make_config("amcs", **SMALL),
                    out,
                    model_name="tiny",
                    concurrency=8,
                    keep_rollouts=True,
                )
        finally:
            await backend.aclose()

    _off_loop(lambda: asyncio.run(go()))
    return out


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "ev"
    args = ["eval", "--problems", "arith-heldout:3", "--strategies", "majority,best-of-n,beam"]
    args += ["--n", "1,4", "--out", str(out), "--quiet"]
    result = _off_loop(lambda: CliRunner().invoke(app, args))
    assert result.exit_code == 0, result.output
    return out


def _expected_totals(data: Path) -> dict:
    """The run's totals computed from the files, independently of the viewer."""
    meta = read_meta(meta_path_for(data))
    lines = list(read_data(data))
    stats = [m["stats"] for m in meta]
    return {
        "problems": len(meta),
        "problems_ok": sum(m["status"] == "ok" for m in meta),
        "problems_failed": sum(m["status"] == "failed" for m in meta),
        "paths": len(lines),
        "labels_positive": sum(sum(x["labels"]) for x in lines),
        "labels_negative": sum(len(x["labels"]) - sum(x["labels"]) for x in lines),
        "rollouts": sum(s.get("rollouts", 0) for s in stats),
        "tokens": sum(s.get("tokens", 0) for s in stats),
        "early_exits": sum(s.get("early_exits", 0) for s in stats),
        "grading_retried": sum(s.get("grading_retried", 0) for s in stats),
        "grading_unresolved": sum(s.get("grading_unresolved", 0) for s in stats),
    }


def _shown_totals(pg) -> dict:
    pg.wait_for_selector("#totals[data-ready='1']")
    cards = pg.locator("#totals .total")
    return {
        cards.nth(i).get_attribute("data-total"): cards.nth(i).locator(".v").inner_text()
        for i in range(cards.count())
    }


def _shown_ids(pg) -> list[str]:
    return pg.locator("#problem-rows tr").evaluate_all("rows => rows.map(r => r.dataset.problem)")


def _view(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["view", *map(str, args)])
    return result.exit_code, result.output


# --- the generate-run page ---------------------------------------------------------------------


def test_tree_records_how_each_estimate_stopped(run):
    for m in read_meta(meta_path_for(run)):
        if m["status"] != "ok":
            continue
        nodes, todo = [], [m["tree"]]
        while todo:
            node = todo.pop()
            nodes.append(node)
            todo.extend(node["children"])
        assert all({"early_exit", "clusters", "uncertainty", "visits"} <= set(n) for n in nodes)
        # Every estimate that stopped early is one node with early_exit set.
        assert sum(n["early_exit"] for n in nodes) == m["stats"]["early_exits"]
        for n in nodes:
            if n["clusters"]:  # the adaptive estimate's clusters hold its rollouts
                assert sum(n["clusters"]) == n["rollouts"] and not n["early_exit"]


@pytest.mark.slow
def test_run_page_shows_the_files_totals_filters_and_trees(run, page, tmp_path):
    code, output = _view(run, "--out", tmp_path / "run.html")
    assert code == 0, output
    assert output.strip() == str(tmp_path / "run.html")
    html = (tmp_path / "run.html").read_text()
    assert "<script src" not in html and "<link" not in html  # self-contained
    meta = read_meta(meta_path_for(run))
    lines = list(read_data(run))
    expected = _expected_totals(run)
    assert expected["problems_failed"] == 1 and expected["paths"] > 0

    page.goto((tmp_path / "run.html").as_uri())
    shown = _shown_totals(page)
    for key, value in expected.items():
        assert shown[key] == f"{value:,}", key
    assert shown["cache_hit_ratio"] == "n/a"  # the hf backend has no prefix cache
    fingerprint = page.inner_text("#fingerprint")
    assert "amcs" in fingerprint and "tiny" in fingerprint
    assert _shown_ids(page) == [m["problem_id"] for m in meta]

    # filters: each against the set computed from the files
    page.select_option("#f-status", "failed")
    assert _shown_ids(page) == [m["problem_id"] for m in meta if m["status"] == "failed"]
    page.select_option("#f-status", "")
    page.check("#f-neg")
    with_minus = {x["problem_id"] for x in lines if not all(x["labels"])}
    assert set(_shown_ids(page)) == with_minus
    page.uncheck("#f-neg")
    page.fill("#f-mc-min", "0.01")
    page.fill("#f-mc-max", "0.99")
    mixed = [m["problem_id"] for m in meta if m["tree"] and 0.01 <= m["tree"]["mc"] <= 0.99]
    assert _shown_ids(page) == mixed
    page.fill("#f-mc-min", "")
    page.fill("#f-mc-max", "")
    page.fill("#f-ro-min", "7")
    assert _shown_ids(page) == [m["problem_id"] for m in meta if m["stats"].get("rollouts", 0) >= 7]
    page.fill("#f-ro-min", "")
    page.fill("#f-search", meta[1]["question"][8:20])
    assert meta[1]["problem_id"] in _shown_ids(page)
    page.fill("#f-search", "")
    assert len(_shown_ids(page)) == len(meta)

    # the failed problem shows its reason
    failed = next(m for m in meta if m["status"] == "failed")
    page.click(f"tr[data-problem='{failed['problem_id']}']")
    assert page.inner_text("#reason") == failed["reason"]
    assert "injected fault" in failed["reason"]

    # a searched problem: its tree, the first error, exact truth, a node's details
    target = next(
        (m for m in meta if m["status"] == "ok" and m["stats"]["labels_negative"]),
        next(m for m in meta if m["status"] == "ok"),
    )
    page.click(f"tr[data-problem='{target['problem_id']}']")
    page.wait_for_selector("#tree .node")
    assert page.inner_text("#gold") == target["answer"]
    mine = [x for x in lines if x["problem_id"] == target["problem_id"]]
    expression = arith.expression_from_question(target["question"])
    errors = page.locator("#tree .node.first-error > .node-line .step-text")
    expected_errors = sorted(
        x["completions"][x["labels"].index(False)] for x in mine if not all(x["labels"])
    )
    assert sorted(errors.all_inner_texts()) == expected_errors
    # every step of every written path is a tree node with its label and exact truth
    for k, x in enumerate(mine):
        truth = arith.check_steps(expression, x["completions"]).prefix_correct
        rows = page.locator(f".path[data-path='{k}'] tbody tr")
        assert rows.count() == len(x["completions"])
        for j, (step, label, ok) in enumerate(
            zip(x["completions"], x["labels"], truth, strict=True)
        ):
            node = rows.nth(j).get_attribute("data-node")
            line = page.locator(f"#tree .node[data-node='{node}'] > .node-line")
            assert line.locator(".step-text").inner_text() == step
            assert line.locator(f"[data-label='{'+' if label else '−'}']").count() == 1
            assert line.locator(f"[data-truth='{int(ok)}']").count() == 1
    # expand the root node: its details say how it was estimated
    root = page.locator("#tree .node.root > .node-line")
    root.click()
    info = page.locator("#tree .node.root > .node-info")
    assert info.is_visible()
    assert f"{target['tree']['rollouts']} (estimated here)" in info.inner_text()
    # fold and unfold the root's children
    page.click("#tree .node.root > .node-line .caret")
    assert page.locator("#tree .node.root > .children").is_hidden()
    page.click("#tree .node.root > .node-line .caret")
    assert page.locator("#tree .node.root > .children").is_visible()
    shot = tmp_path / "run.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_problem_detail_maps_paths_onto_the_tree(run):
    with RunIndex(run) as index:
        lines = list(read_data(run))
        for i in range(len(index)):
            record = index.record(i)
            paths = index.paths(i)
            assert paths == [x for x in lines if x["problem_id"] == record["problem_id"]]
            detail = problem_detail(record, paths)
            by_id = {n["id"]: n for n in detail["nodes"]}
            for path in detail["labelled_paths"]:
                # the path's node chain runs from the root's child down, one step per node
                chain = [by_id[j] for j in path["nodes"]]
                assert [n["step"] for n in chain] == path["completions"]
                assert [n["depth"] for n in chain] == list(range(1, len(chain) + 1))
            if record["status"] == "ok":
                assert detail["nodes"][0]["mc"] == record["tree"]["mc"]


# --- the eval page -----------------------------------------------------------------------------


def test_eval_page_shows_results_candidates_and_choices(eval_dir, page, tmp_path):
    code, output = _view(eval_dir)
    assert code == 0, output
    assert output.strip() == str(eval_dir / "view.html")
    results = json.loads((eval_dir / "results.json").read_text())["results"]
    records = [json.loads(x) for x in (eval_dir / "records.jsonl").read_text().splitlines()]
    page.goto((eval_dir / "view.html").as_uri())
    page.wait_for_selector("#app[data-ready='1']")
    # the results table and the plot: one row and one point per (strategy, N)
    for r in results:
        row = page.locator(f"#results tr[data-cell='{r['strategy']}@{r['n']}']")
        assert row.locator(".acc").inner_text() == f"{100 * r['accuracy']:.1f}%"
    assert page.locator("#plot circle").count() == len(results)
    # problems: one row each; "wrong only" for best-of-n@4 keeps the problems it got wrong
    problem_ids = list(dict.fromkeys(r["problem_id"] for r in records))
    assert _shown_ids(page) == problem_ids
    page.select_option("#f-cell", "best-of-n@4")
    page.check("#f-wrong")
    bon = {r["problem_id"]: r for r in records if (r["strategy"], r["n"]) == ("best-of-n", 4)}
    assert _shown_ids(page) == [p for p in problem_ids if not bon[p]["correct"]]
    page.uncheck("#f-wrong")
    # open a problem: best-of-n@4's candidates, the chosen one, scores, right or wrong
    pid = problem_ids[0]
    page.click(f"tr[data-problem='{pid}']")
    record = bon[pid]
    assert page.inner_text("#gold") == record["reference"]
    run_box = page.locator(".run[data-cell='best-of-n@4']")
    cands = run_box.locator(".cand")
    assert cands.count() == len(record["candidates"])
    assert run_box.locator(".cand[data-chosen='1']").get_attribute("data-candidate") == str(
        record["chosen"]
    )
    for i, c in enumerate(record["candidates"]):
        box = cands.nth(i)
        right = answers_match_fast(c["answer"], record["reference"]) if c["answer"] else False
        assert box.get_attribute("data-correct") == str(right).lower()
        shown = box.locator(".s .sc").all_inner_texts()
        assert shown == [f"{s:.3f}" for s in c["step_scores"]]
    shot = tmp_path / "eval.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 1000


# --- errors ------------------------------------------------------------------------------------


def test_user_errors_are_one_line(tmp_path, eval_dir, run):
    (tmp_path / "plain.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "nometa.meta.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    (tmp_path / "nometa.jsonl").write_text("")
    bad_eval = tmp_path / "bad_eval"
    bad_eval.mkdir()
    (bad_eval / "results.json").write_text("[1, 2")
    cases = {
        tmp_path / "missing.jsonl": "no such file",
        tmp_path / "plain.jsonl": "not an amcs generate run",
        tmp_path / "empty_dir": "not an amcs eval folder",
        tmp_path / "nometa.jsonl": "no line has a problem_id",
        bad_eval: "not an amcs eval results file",
    }
    for path, message in cases.items():
        code, output = _view(path)
        assert code == 2, (path, output)
        assert output.strip().startswith("error:") and message in output, output
        assert len(output.strip().splitlines()) == 1, output
    code, output = _view(run, "--out", tmp_path / "no" / "such" / "dir.html")
    assert code == 2 and "does not exist" in output
    code, output = _view(run, "--limit", "-1")
    assert code == 2 and "--limit" in output


# --- format changes: a run header, retried problems, a torn line ---------------------------------


def test_reader_takes_the_header_and_the_last_record_of_a_retried_problem(run, tmp_path):
    data, meta = tmp_path / "d.jsonl", tmp_path / "d.meta.jsonl"
    shutil.copy(run, data)
    records = read_meta(meta_path_for(run))
    failed = next(m for m in records if m["status"] == "failed")
    donor = next(m for m in records if m["status"] == "ok" and m["paths"])
    donor_lines = [x for x in read_data(run) if x["problem_id"] == donor["problem_id"]]
    # the retry: the failed problem's new data lines go after everything, then its meta line
    with data.open("a") as f:
        for x in donor_lines:
            f.write(json.dumps(dict(x, problem_id=failed["problem_id"])) + "\n")
    retried = dict(donor, problem_id=failed["problem_id"], data_end=data.stat().st_size)
    header = {"fingerprint": {"method": "amcs", "model": "tiny", "seed": 0}}
    lines = [header, *records, retried]
    meta.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"problem_id": "torn')
    with RunIndex(data) as index:
        assert index.header == header
        assert index.fingerprint()["model"] == "tiny"
        assert [e.problem_id for e in index.entries] == [m["problem_id"] for m in records]
        i = [e.problem_id for e in index.entries].index(failed["problem_id"])
        assert index.record(i)["status"] == "ok"  # the last record wins, at its first place
        assert [x["completions"] for x in index.paths(i)] == [x["completions"] for x in donor_lines]
    # the writer's own header is read as it is
    with RunIndex(run) as index:
        assert index.header["format"] == "amcs-meta" and index.fingerprint()["model"] == "tiny"
    # old files (no header) name the method and model from the data lines
    old = tmp_path / "old.jsonl"
    shutil.copy(run, old)
    lines = meta_path_for(run).read_text().splitlines(keepends=True)
    assert json.loads(lines[0])["format"] == "amcs-meta"
    meta_path_for(old).write_text("".join(lines[1:]))
    with RunIndex(old) as index:
        assert index.header is None and index.fingerprint()["model"] == "tiny"


# --- a 100k-problem run with --serve ---------------------------------------------------------------


def synthesize_run(source: Path, out: Path, n: int) -> dict:
    """A run of n problems made from the real records of `source` (renamed copies, after a run
    header as the new writer will write one). Returns totals the viewer should show."""
    records = read_meta(meta_path_for(source))
    lines = list(read_data(source))
    templates = []
    for m in records:
        body = {k: v for k, v in m.items() if k != "data_end"}
        meta_t = json.dumps(dict(body, problem_id="@@ID@@"))[:-1]
        data_t = [
            json.dumps(dict(x, problem_id="@@ID@@")) + "\n"
            for x in lines
            if x["problem_id"] == m["problem_id"]
        ]
        templates.append((m, meta_t, data_t))
    totals = dict.fromkeys(("problems", "problems_failed", "paths", "rollouts"), 0)
    meta_path = meta_path_for(out)
    header = {"fingerprint": {"method": "amcs", "model": "tiny", "source": "synthetic"}}
    end = 0
    with open(out, "w") as data_f, open(meta_path, "w") as meta_f:
        meta_f.write(json.dumps(header) + "\n")
        for i in range(n):
            m, meta_t, data_t = templates[i % len(templates)]
            pid = json.dumps(f"{m['problem_id']}#{i}")
            chunk = "".join(t.replace('"@@ID@@"', pid, 1) for t in data_t)
            data_f.write(chunk)
            end += len(chunk.encode())
            meta_f.write(meta_t.replace('"@@ID@@"', pid, 1) + f', "data_end": {end}}}\n')
            totals["problems"] += 1
            totals["problems_failed"] += m["status"] == "failed"
            totals["paths"] += m["paths"]
            totals["rollouts"] += m["stats"].get("rollouts", 0)
    return totals


def start_server(path: Path) -> tuple[subprocess.Popen, str, float]:
    """`amcs view PATH --serve` in a subprocess; (process, URL, perf_counter() at its start)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "view", str(path), "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"no URL from amcs view --serve: {line!r} {proc.stderr.read()}")
    return proc, line.split(" at ")[1].split()[0], started


@pytest.mark.slow
def test_100k_problem_run_opens_with_serve(run, page, tmp_path):
    big = tmp_path / "big.jsonl"
    expected = synthesize_run(run, big, 100_000)
    proc, url, started = start_server(big)
    try:
        url_s = time.perf_counter() - started
        page.goto(url)
        page.wait_for_selector("#problem-rows tr")
        first_page_s = time.perf_counter() - started
        rows = page.locator("#problem-rows tr").count()
        # Printed, not asserted (timing targets live in benchmarks/view_serve.py).
        print(
            f"\n100k-problem run with --serve: URL after {url_s:.2f}s, first page shown "
            f"{first_page_s:.2f}s after the command started"
        )
        assert rows == 50
        assert page.locator("#problem-rows tr").first.get_attribute("data-problem").endswith("#0")
        # the totals come once the background pass has read every line
        page.wait_for_selector("#totals[data-ready='1']", timeout=120_000)
        shown = _shown_totals(page)
        for key, value in expected.items():
            assert shown[key] == f"{value:,}", key
        # a problem far down the file opens lazily
        page.wait_for_selector("#app[data-ready='1']", timeout=120_000)
        page.fill("#f-search", "#99999")
        page.wait_for_selector("#problem-rows tr[data-problem$='#99999']")
        page.click("#problem-rows tr[data-problem$='#99999']")
        page.wait_for_selector("#detail h2")
        assert "#99999" in page.inner_text("#detail h2")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_written_page_holds_limit_problems_and_counts_them_all(run, eval_dir, tmp_path):
    from amcs.view.page import write_run_page

    out, data = write_run_page(run, tmp_path / "two.html", limit=2)
    assert [r[1] for r in data["rows"]] == [m["problem_id"] for m in read_meta(meta_path_for(run))][
        :2
    ]
    assert sorted(data["details"]) == ["0", "1"]
    expected = _expected_totals(run)
    assert {k: data["totals"][k] for k in expected} == expected
    # the records.jsonl of an eval folder stands for the folder
    code, output = _view(eval_dir / "records.jsonl", "--out", tmp_path / "e.html")
    assert code == 0 and "amcs view — eval" not in output
    assert '"kind": "eval"' in (tmp_path / "e.html").read_text()


def test_serve_api_without_a_browser(run):
    import urllib.error
    import urllib.request

    from amcs.view.server import RunSource, serve_page

    index = RunIndex(run)
    server = serve_page({"kind": "run", "mode": "serve"}, "t", RunSource(index, str(run)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    def get(path: str) -> dict:
        with urllib.request.urlopen(url + path, timeout=60) as r:
            return json.loads(r.read())

    try:
        meta = read_meta(meta_path_for(run))
        assert get("api/info")["total_problems"] == len(meta)
        rows = get("api/rows?start=1&count=2")["rows"]
        assert [r[1] for r in rows] == [m["problem_id"] for m in meta[1:3]]
        expected = _expected_totals(run)
        totals = get("api/totals")["totals"]
        assert {k: totals[k] for k in expected} == expected
        detail = get("api/problem?index=0")
        assert detail["problem_id"] == meta[0]["problem_id"]
        with pytest.raises(urllib.error.HTTPError) as bad:
            get(f"api/problem?index={len(meta)}")
        assert bad.value.code == 400
        assert (
            json.loads(bad.value.read())["error"]
            == f"no problem {len(meta)}: the run has {len(meta)}"
        )
    finally:
        server.shutdown()
        server.server_close()
        index.close()


# --- kept rollouts and the policy's prompt -------------------------------------------------------


def _kept_by_step(tree: dict, prefix: tuple = ()) -> dict[tuple, list]:
    """{step prefix: kept rollouts} over a meta tree, keyed as problem_detail keys its nodes."""
    key = prefix + tuple(split_node_text(tree["text"]))
    out = {key: tree["kept_rollouts"]} if "kept_rollouts" in tree else {}
    for child in tree["children"]:
        out |= _kept_by_step(child, key)
    return out


def _steps(nodes: list[dict], node: dict) -> tuple:
    """The step prefix of a problem_detail node (its steps from the root down)."""
    steps = []
    while node["parent"] is not None:
        steps.append(node["step"])
        node = nodes[node["parent"]]
    return tuple(reversed(steps))


def test_kept_rollouts_reach_every_estimated_node_of_the_page_data(kept_run):
    from amcs.view.server import RunSource

    meta = read_meta(meta_path_for(kept_run))
    index = RunIndex(kept_run)
    source = RunSource(index, str(kept_run))
    try:
        for i, m in enumerate(meta):
            expected = _kept_by_step(m["tree"])
            assert () in expected  # the root's estimate at least
            for detail in (problem_detail(index.record(i), index.paths(i)), source.problem(i)):
                assert detail["policy_prompt"] == m["policy_prompt"]
                nodes = detail["nodes"]
                shown = {_steps(nodes, n): n["kept_rollouts"] for n in nodes if n["kept_rollouts"]}
                assert shown == expected
    finally:
        index.close()


def test_run_page_shows_kept_rollouts_folded_escaped_and_marked_when_cut(kept_run, page, tmp_path):
    # A hostile copy: one kept rollout's text is markup that would break out of the page, and it
    # was cut at max_new_tokens.
    data, meta_file = tmp_path / "k.jsonl", tmp_path / "k.meta.jsonl"
    shutil.copy(kept_run, data)
    lines = meta_path_for(kept_run).read_text().splitlines()
    record = json.loads(lines[1])
    hostile = '</script><b id="evil">bold</b>\n\n& <i>'
    record["tree"]["kept_rollouts"][0] |= {"text": hostile, "finish_reason": "length"}
    lines[1] = json.dumps(record)
    meta_file.write_text("\n".join(lines) + "\n")
    code, output = _view(data, "--out", tmp_path / "k.html")
    assert code == 0, output

    page.goto((tmp_path / "k.html").as_uri())
    page.click(f"tr[data-problem='{record['problem_id']}']")
    page.wait_for_selector("#tree .node")
    assert page.locator("#policy-prompt").text_content() == record["policy_prompt"]
    assert record["policy_prompt"] != record["question"]
    kept = record["tree"]["kept_rollouts"]
    folded = page.locator("#tree .node.root > details.kept")
    assert folded.get_attribute("open") is None  # folded until asked
    assert not page.locator("#tree .node.root > details.kept .rollout-text").first.is_visible()
    right = sum(r["correct"] for r in kept)
    assert folded.locator("summary").inner_text().startswith(f"{len(kept)} rollouts kept: {right}")
    folded.locator("summary").click()
    texts = folded.locator(".rollout-text").evaluate_all("els => els.map(e => e.textContent)")
    assert texts == [r["text"] for r in kept]  # the hostile one as plain text
    assert page.locator("#evil").count() == 0
    rollouts = folded.locator(".rollout")
    assert rollouts.first.get_attribute("data-cut") == "1"
    assert "cut at max_new_tokens" in rollouts.first.inner_text()
    marks = rollouts.evaluate_all("els => els.map(e => e.dataset.correct)")
    assert marks == ["1" if r["correct"] else "0" for r in kept]


# --- issue 21 (c): questions full of markup ---------------------------------------------------------

HOSTILE_QUESTIONS = [
    "<!--<script>",  # puts the HTML parser in "script data double escaped": the data block no
    # longer ended at its own </script> when only "</" was escaped
    "</script><script>window.__amcs_injected = 'script'</script>",
    "<img src=x onerror=\"window.__amcs_injected = 'img'\"> & &amp; \u2028 \u2029",
]


def test_a_question_with_script_markup_renders_literally_and_runs_nothing(run, page, tmp_path):
    data, meta = tmp_path / "h.jsonl", tmp_path / "h.meta.jsonl"
    shutil.copy(run, data)
    header, *lines = meta_path_for(run).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    ok = [i for i, m in enumerate(records) if m["status"] == "ok"]
    assert len(ok) >= len(HOSTILE_QUESTIONS)
    for i, question in zip(ok, HOSTILE_QUESTIONS, strict=False):
        records[i]["question"] = question
    meta.write_text(
        "\n".join([header, *(json.dumps(m, ensure_ascii=False) for m in records)]) + "\n",
        encoding="utf-8",
    )
    code, output = _view(data, "--out", tmp_path / "h.html")
    assert code == 0, output
    html = (tmp_path / "h.html").read_text(encoding="utf-8")
    block = html.split("id=amcs-data>", 1)[1].split("</script>", 1)[0]
    assert "<" not in block and "&" not in block  # nothing in the data speaks HTML

    page.goto((tmp_path / "h.html").as_uri())
    # Not stuck on "loading…": the totals and every row are there.
    assert _shown_totals(page)["problems"] == str(len(records))
    assert page.locator("#loading").count() == 0
    assert _shown_ids(page) == [m["problem_id"] for m in records]
    for i, question in zip(ok, HOSTILE_QUESTIONS, strict=False):
        pid = records[i]["problem_id"]
        row = page.locator(f"tr[data-problem='{pid}'] td.q")
        assert row.get_attribute("title") == question
        page.click(f"tr[data-problem='{pid}']")
        page.wait_for_selector("#detail h2")
        assert page.locator("#detail pre").first.text_content() == question  # shown literally
    assert page.evaluate("window.__amcs_injected") is None  # no injected script or handler ran
    assert page.locator("#app img").count() == 0
