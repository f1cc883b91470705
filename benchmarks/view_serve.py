"""How fast `amcs view --serve` opens a large run: a 100k-problem run made of renamed copies of
a real `amcs generate` run's records.

    uv run python benchmarks/view_serve.py [--problems 100000] [--run data.jsonl] [--browser]

Without --run it first labels 5 arithmetic problems with the tiny policy (about 20 s here). It
times, from the moment the command starts: the URL printed (the meta file indexed); with --browser
the first page of rows shown in headless Chromium (started beforehand); the first 200 table rows
served over HTTP; and the totals (every line parsed). Results go to benchmarks/results/view_serve.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from cli.main import app
from tests.test_view import CHROMIUM_ARGS, _chromium, start_server, synthesize_run

RESULTS = Path(__file__).resolve().parent / "results" / "view_serve.json"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=600) as r:
        return r.read()


def _real_run(tmp: Path) -> Path:
    from typer.testing import CliRunner

    out = tmp / "real.jsonl"
    args = ["generate", "--problems", "arith:5", "--out", str(out), "--quiet"]
    args += ["--set", "max_new_tokens=120", "--set", "rollout_budget=40"]
    result = CliRunner().invoke(app, args)
    if result.exit_code:
        raise SystemExit(result.output)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", type=int, default=100_000)
    ap.add_argument("--run", type=Path, help="a generate data file to copy records from")
    ap.add_argument("--browser", action="store_true", help="also time the page in Chromium")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.run or _real_run(tmp)
        big = tmp / "big.jsonl"
        synthesize_run(source, big, args.problems)
        sizes = {"meta_bytes": big.with_suffix(".meta.jsonl").stat().st_size}
        sizes["data_bytes"] = big.stat().st_size
        browser = None
        if args.browser:  # started first: its own start-up is not the viewer's time
            from playwright.sync_api import sync_playwright

            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        proc, url, started = start_server(big)
        try:
            result = {"problems": args.problems, **sizes}
            result["url_s"] = time.perf_counter() - started
            if browser is not None:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#problem-rows tr")
                result["first_page_browser_s"] = time.perf_counter() - started
            rows = json.loads(_get(url + "api/rows?start=0&count=200"))["rows"]
            assert len(rows) == 200
            result["first_rows_http_s"] = time.perf_counter() - started
            _get(url + "api/totals")
            result["totals_s"] = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if browser is not None:
                browser.close()
                playwright.stop()
    result = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
