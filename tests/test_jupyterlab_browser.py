"""The interactive path, in a real browser: triage.ipynb run cell by cell in JupyterLab in Chromium.

What `make lab` gives the on-call engineer: JupyterLab with the project's kernel over the embedded
stack. Here JupyterLab serves a temporary copy of notebooks/ (it writes checkpoints beside the
notebooks; the kernel's cwd is there too) whose triage parameters point at this test's own stack
on free ports (so the test is xdist-safe), with a 429 fault injected. Headless Debian Chromium,
driven by Playwright, runs all cells from the menu; the test then reads the rendered page: the
verdict is visible, headings and tables are rendered as HTML, no traceback, no raw Python repr,
no API key, no request off the machine. A full-length screenshot is kept for people to look at
(tmp_path/triage.png, and copied to $RUNBOOK_SCREENSHOT_DIR if set).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from browser_support import KERNEL_DISPLAY, JupyterLab, chromium_page, copy_notebooks, require_chromium, \
    set_parameter_defaults

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.notebook

RUN_TIMEOUT_MS = 120_000  # whole "Run All Cells" (the checks themselves are bounded by timeout_s)
STEP_TIMEOUT_MS = 60_000  # page load, kernel start

# The state the wait is about, computed in the page (no fixed sleeps: poll until all are true).
PAGE_STATE_JS = """() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  const prompts = nb ? [...nb.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim()) : [];
  const status = (document.querySelector('#jp-main-statusbar') || {}).textContent || '';
  const dialog = document.querySelector('.jp-Dialog');
  const outputs = nb ? [...nb.querySelectorAll('.jp-OutputArea-output')] : [];
  return {
    cells: nb ? nb.querySelectorAll('.jp-Cell').length : 0,
    prompts,
    executed: prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p)),
    idle: /\\|\\s*Idle/.test(status),
    status,
    verdict: outputs.some(o => [...o.querySelectorAll('h3')].some(h => /^\\s*Verdict¶?\\s*$/.test(h.textContent))),
    errors: outputs.filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr').length,
    dialog: dialog ? dialog.innerText : null,
  };
}"""

# Each output area's text, for pattern checks (textContent: includes cells content-visibility skips).
OUTPUT_TEXTS_JS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map((cell, i) => ({
  cell: i,
  text: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent).join('\\n'),
  mimes: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => o.getAttribute('data-mime-type')),
  executeResults: cell.querySelectorAll('.jp-OutputArea-executeResult').length,
})).filter(c => c.mimes.length)"""

RAW_REPRS = {
    "object repr": re.compile(r"<[A-Za-z_][\w.]* object at 0x[0-9a-fA-F]+>"),
    "dataclass/namedtuple repr": re.compile(r"\b[A-Z][A-Za-z0-9_]*\((?:[a-z_]\w*=)"),
    "RunResult": re.compile(r"RunResult\("),
    "dict or list literal": re.compile(r"\{'|\[\{|\['"),
    "DataFrame text": re.compile(r"DataFrame|dtype: \w+|\[\d+ rows x \d+ columns\]"),
    "record fallback (markdown not rendered)": re.compile(r"\[recorded: \w+\]"),
    "markdown table not rendered": re.compile(r"^\s*\|.*\|\s*$|\|\s*-{3,}\s*\|", re.MULTILINE),
    "markdown heading not rendered": re.compile(r"^#{1,6} \S", re.MULTILINE),
}


def _markdown_headings(notebook: Path) -> dict[int, list[str]]:
    """Level -> heading texts of the notebook's markdown cells (what JupyterLab must render as h1/h2/...)."""
    nb = nbformat.read(notebook, as_version=4)
    found: dict[int, list[str]] = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for m in re.finditer(r"^(#{1,6})\s+(.+?)\s*#*\s*$", cell.source, re.MULTILINE):
                found.setdefault(len(m.group(1)), []).append(m.group(2).replace("`", ""))
    return found


def _fit_viewport_to_notebook(page, max_height: int = 16_000) -> None:
    """Make the window as tall as the notebook's cells (JupyterLab scrolls inside a fixed-size panel).

    Measured from the last cell's bottom, not scrollHeight: the notebook pads its end ("scroll
    past end") by about a window's height, which would grow with every resize.
    """
    for _ in range(8):  # content-visibility cells take their real height once on screen: until stable
        missing = page.evaluate("""() => {
          const outer = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
          const cells = outer ? outer.querySelectorAll('.jp-Cell') : [];
          if (!cells.length) return 0;
          outer.scrollTop = 0;
          const last = cells[cells.length - 1].getBoundingClientRect();
          return Math.ceil(last.bottom - outer.getBoundingClientRect().bottom);
        }""")
        size = page.viewport_size
        height = min(max_height, size["height"] + missing + 24)
        if missing <= 0 or height == size["height"]:
            break
        page.set_viewport_size({"width": size["width"], "height": height})
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _save_screenshot(page, path: Path) -> str | None:
    """Full page to `path`, copied to $RUNBOOK_SCREENSHOT_DIR if set; the error as text, never raised."""
    try:
        page.screenshot(path=str(path), full_page=True, timeout=30_000)
        if os.environ.get("RUNBOOK_SCREENSHOT_DIR"):
            keep = Path(os.environ["RUNBOOK_SCREENSHOT_DIR"])
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep / path.name)
    except Exception as e:  # noqa: BLE001 - must not hide the failure that led here
        return repr(e)
    return None


def test_triage_runs_and_reads_well_in_jupyterlab(cluster_stack, api_key, tmp_path):
    require_chromium()
    t0 = time.monotonic()
    stack = cluster_stack
    stack.set_mode("rate_limited")
    assert stack.wait_for_service_status({"down"}, timeout_s=10), "service never reflected the fault"

    notebooks = copy_notebooks(ROOT / "notebooks", tmp_path / "notebooks")
    set_parameter_defaults(notebooks / "triage.ipynb", {
        "mistral_url": stack.mistral_url, "service_health_url": stack.service_health_url,
        "prometheus_url": "",  # not started here; a real one on :19090 (make lab) must not be read
        "kubeconfig": stack.kubeconfig["ok"]})
    headings = _markdown_headings(notebooks / "triage.ipynb")
    shot = tmp_path / "triage.png"
    timings: dict[str, float] = {}

    with JupyterLab(root_dir=notebooks, home=tmp_path / "home") as lab, chromium_page(lab.url) as (page, offsite):
        timings["lab_ready_s"] = time.monotonic() - t0

        def state() -> dict:
            try:
                return page.evaluate(PAGE_STATE_JS)
            except Exception as e:  # noqa: BLE001 - only for a failure message: a crashed page says so
                return {"page unavailable": repr(e)}

        def explain(what: str) -> str:
            return (f"{what}; page state {state()}; screenshot {shot}; offsite requests {offsite}\n"
                    f"--- JupyterLab log (tail) ---\n{lab.log_tail()}")

        def wait_for(condition: str, timeout_ms: int, what: str) -> None:
            try:
                page.wait_for_function(f"(() => {{ const s = ({PAGE_STATE_JS})(); return {condition}; }})",
                                       timeout=timeout_ms, polling=100)
            except PlaywrightTimeoutError:
                pytest.fail(explain(f"{what}: not within {timeout_ms / 1000:g} s"))

        try:
            page.goto(lab.lab_url("triage.ipynb"), timeout=STEP_TIMEOUT_MS)
            wait_for(f"s.cells > 0 && s.idle && s.status.includes({KERNEL_DISPLAY!r})", STEP_TIMEOUT_MS,
                     f"notebook open and its kernel ({KERNEL_DISPLAY}) idle")
            lab.remember_children()  # the kernel, in case the server does not shut it down
            timings["kernel_idle_s"] = time.monotonic() - t0

            page.locator("#jp-menu-panel .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            wait_for("(s.executed && s.idle && s.verdict) || s.errors > 0 || s.dialog", RUN_TIMEOUT_MS,
                     "every cell run, kernel idle and the verdict shown (or an error)")
            timings["run_all_s"] = time.monotonic() - t0
            # A full-length picture: collapse the file browser, grow the window to the notebook's height.
            page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
            _fit_viewport_to_notebook(page)
        finally:  # also on failure: the picture is the first thing to look at
            shot_error = _save_screenshot(page, shot)

        s = state()
        assert s["dialog"] is None, explain(f"a dialog is open: {s['dialog']!r}")
        assert s["errors"] == 0, explain("stderr/error output in the notebook")
        assert s["executed"] and s["idle"], explain("not every code cell ran")
        assert KERNEL_DISPLAY in s["status"], explain(f"not the project's kernel ({KERNEL_DISPLAY})")

        # The verdict, visible, with the severity and class of the injected fault.
        verdict = page.locator(".jp-OutputArea-output table code", has_text="->").last
        assert verdict.is_visible(), explain("verdict line not visible")
        line = verdict.inner_text().strip()
        assert re.fullmatch(r"P[1-4] [a-z ]+ -> \w+", line), explain(f"verdict line {line!r}")
        assert line == "P1 rate limited -> diagnose_rate_limit", explain(f"verdict for a 429 fault: {line!r}")
        severity = page.locator(".jp-OutputArea-output h2", has_text=re.compile(r"^P[1-4]: "))
        assert severity.count() == 1 and severity.first.is_visible(), explain("severity heading (h2) not rendered")
        assert severity.first.inner_text().startswith("P1: "), explain("severity heading")

        # Markdown cells: every heading of the notebook rendered as a heading element.
        for level, texts in headings.items():
            rendered = page.locator(f".jp-MarkdownCell .jp-RenderedMarkdown h{level}").all_text_contents()
            rendered = [t.strip().rstrip("¶").strip() for t in rendered]  # JupyterLab's anchor link
            assert rendered == texts, explain(f"h{level} headings rendered {rendered}, notebook has {texts}")
        assert headings.get(1) and len(headings.get(2, [])) >= 5, f"notebook headings changed? {headings}"

        # Tables rendered as HTML: parameters, timings, probes, rate-limit headers, service, logs, verdict.
        tables = page.locator(".jp-OutputArea-output table")
        assert tables.count() >= 7, explain(f"only {tables.count()} HTML tables in the outputs")
        probes = page.locator(".jp-OutputArea-output table", has=page.locator("th", has_text="HTTP")).first
        assert probes.locator("tbody tr").count() == 5, explain("probe table should have one row per sample (5)")
        assert probes.locator("tbody td", has_text=re.compile(r"^429$")).count() == 5, explain("probe table")
        blank_headers = page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output table')]
          .filter(t => { const th = [...t.querySelectorAll('thead th')];
                         return th.length > 0 && th.every(h => !h.textContent.trim()); }).length""")
        assert blank_headers == 0, explain(f"{blank_headers} table(s) with an empty header row (a blank band)")

        html, text = page.content(), page.evaluate("document.body.innerText")
        assert api_key not in html and api_key not in text, explain("the API key is on the page")
        assert offsite == [], explain("the page tried to reach beyond 127.0.0.1")

        # No traceback, no raw Python repr, no unrendered markdown in any output area.
        outputs = page.evaluate(OUTPUT_TEXTS_JS)
        assert outputs, explain("no outputs at all")
        for out in outputs:
            where = f"cell {out['cell']} ({out['mimes']})"
            assert "Traceback" not in out["text"], explain(f"traceback in {where}:\n{out['text']}")
            assert out["executeResults"] == 0, explain(f"an expression's repr is shown in {where}:\n{out['text']}")
            assert "text/plain" not in out["mimes"], explain(f"a plain-text repr instead of a rendering in {where}")
            for what, pattern in RAW_REPRS.items():
                m = pattern.search(out["text"])
                assert m is None, explain(f"{what} in {where}: {m.group(0)!r} in\n{out['text']}")
        timings["checked_s"] = time.monotonic() - t0

    assert shot_error is None, f"no screenshot: {shot_error}"
    assert shot.stat().st_size > 50_000, f"screenshot {shot} looks empty"
    print(f"timings {({k: round(v, 1) for k, v in timings.items()})}; screenshot {shot}")
