"""The interactive path, in a real browser: `runbook open triage`, run all, save, follow the verdict.

What the on-call engineer does in JupyterLab: `runbook open triage --incident-id X` (a real
process: it copies the runbook into a new incident folder with its parameters filled and starts
JupyterLab with the project's kernel and the save hooks), here pointed at this test's own stack on
free ports with a 429 fault injected. Headless Debian Chromium, driven by Playwright, runs all
cells from the menu and saves. The test then reads the rendered page (the verdict is visible,
headings and tables rendered as HTML, no traceback, no raw Python repr, no API key, no request
off the machine), follows the verdict's link (it opens the diagnosis prepared in the same folder
with the parameters carried over), stops the command with SIGTERM and checks the record: the
executed copy, `triage.run.json` (status interactive, the verdict), the HTML, the incident in
`runbook list`, no key anywhere, and `notebooks/` untouched. A full-length screenshot is kept for
people to look at (tmp_path/triage.png, and copied to $RUNBOOK_SCREENSHOT_DIR if set).
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

from browser_support import KERNEL_DISPLAY, RunbookCommand, chromium_page, isolated_jupyter_env, require_chromium

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


INCIDENT_ID = "BROWSER-1"
EXPECTED_VERDICT = "P1 rate limited -> diagnose_rate_limit"
NEXT = "diagnose_rate_limit"
# The main area's tabs: which document is current, and its path (JupyterLab's tab caption says "Path: ...").
CURRENT_TAB_JS = """() => { const t = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current');
  return t ? t.title : ''; }"""


def _notebooks_state() -> tuple[str, dict[str, str]]:
    """`git status --porcelain notebooks/` and every file under notebooks/ with its sha256: to compare after."""
    import hashlib
    import subprocess

    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "notebooks/"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False).stdout
    files = {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((ROOT / "notebooks").rglob("*")) if p.is_file()}
    return status, files


def _wait_for_seal(page, folder: Path, explain, timeout_s: float = 60.0) -> dict:
    """The copy's run.json once the save has sealed it with a verdict (the save hook writes it).

    Waits with the page's clock, not time.sleep: Playwright's sync API serves the page's requests
    (the save itself, through the offsite filter) only while the test calls into it.
    """
    import json

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            run = json.loads((folder / "triage.run.json").read_text("utf-8"))
            if (run.get("verdict") or {}).get("line") and (folder / f"{NEXT}.ipynb").exists():
                return run
        except (OSError, ValueError):
            pass
        page.wait_for_timeout(200)
    pytest.fail(explain(f"no sealed triage.run.json with a verdict (and {NEXT}.ipynb) in {folder} within "
                        f"{timeout_s:g} s: {sorted(p.name for p in folder.iterdir())}"))


def _check_rendering(page, explain, headings: dict[int, list[str]], api_key: str, offsite: list[str]) -> None:
    """The executed triage as the engineer reads it: verdict, headings, tables, no repr, no key, no offsite call."""
    verdict = page.locator(".jp-OutputArea-output table code", has_text="->").last
    assert verdict.is_visible(), explain("verdict line not visible")
    line = verdict.inner_text().strip()
    assert line == EXPECTED_VERDICT, explain(f"verdict for a 429 fault: {line!r}")
    severity = page.locator(".jp-OutputArea-output h2", has_text=re.compile(r"^P[1-4]: "))
    assert severity.count() == 1 and severity.first.is_visible(), explain("severity heading (h2) not rendered")
    assert severity.first.inner_text().startswith("P1: "), explain("severity heading")

    for level, texts in headings.items():  # every markdown heading of the notebook rendered as a heading
        rendered = page.locator(f".jp-MarkdownCell .jp-RenderedMarkdown h{level}").all_text_contents()
        rendered = [t.strip().rstrip("¶").strip() for t in rendered]  # JupyterLab's anchor link
        assert rendered == texts, explain(f"h{level} headings rendered {rendered}, notebook has {texts}")
    assert headings.get(1) and len(headings.get(2, [])) >= 5, f"notebook headings changed? {headings}"

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


def _check_record(out: Path, folder: Path, stack, api_key: str) -> None:
    """What the session left: the sealed record, the next runbook prepared beside it, the archive's entry."""
    import json

    from runbook_lib.record import read_records
    from runbook_lib.records.archive import scan

    run = json.loads((folder / "triage.run.json").read_text("utf-8"))
    assert run["status"] == "interactive" and run["verdict"]["line"] == EXPECTED_VERDICT, run
    assert run["incident_id"] == INCIDENT_ID and run["error"] is None, run
    assert read_records(folder / "triage.ipynb")["verdict"]["line"] == EXPECTED_VERDICT, "the executed copy"
    assert EXPECTED_VERDICT.replace(">", "&gt;") in (folder / "triage.html").read_text("utf-8"), "the HTML export"
    index = json.loads((folder / "incident.json").read_text("utf-8"))
    assert (index["id"], index["status"], index["severity"], index["error_class"]) == (
        INCIDENT_ID, "interactive", "P1", "rate_limit"), index
    assert [(n["name"], n["verdict"]) for n in index["notebooks"]] == [("triage", EXPECTED_VERDICT)], index
    following = json.loads((folder / f"{NEXT}.ipynb").read_text("utf-8"))["metadata"]["papermill"]["parameters"]
    assert following["incident_id"] == INCIDENT_ID and following["mistral_url"] == stack.mistral_url, following
    assert following["kubeconfig"] == stack.kubeconfig["ok"], following
    listed = scan(out).incidents
    assert [(r["id"], r["status"], r["verdict"]) for r in listed] == [(INCIDENT_ID, "interactive", EXPECTED_VERDICT)]
    for path in folder.rglob("*"):
        if path.is_file():
            assert api_key not in path.read_text("utf-8", "replace"), f"the API key is in {path}"


def test_open_run_save_and_follow_the_verdict_in_jupyterlab(cluster_stack, api_key, tmp_path):
    require_chromium()
    t0 = time.monotonic()
    stack = cluster_stack
    stack.set_mode("rate_limited")
    assert stack.wait_for_service_status({"down"}, timeout_s=10), "service never reflected the fault"
    before = _notebooks_state()
    headings = _markdown_headings(ROOT / "notebooks" / "triage.ipynb")
    shot = tmp_path / "triage.png"
    out = tmp_path / "outputs"
    env = {**isolated_jupyter_env(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    args = ["open", "triage", "--incident-id", INCIDENT_ID, "--output-dir", str(out), "--port", "0",
            "-p", "mistral_url", stack.mistral_url, "-p", "service_health_url", stack.service_health_url,
            "-p", "prometheus_url", "",  # not started here; a real one on :19090 (make lab) must not be read
            "-p", "kubeconfig", stack.kubeconfig["ok"], "-p", "operator", "browser-test"]
    timings: dict[str, float] = {}

    with RunbookCommand(args, env, cwd=ROOT) as command:
        m = command.wait_for(r"JupyterLab: ((http://127\.0\.0\.1:\d+)/lab/tree/(\S+)\?token=\w+)", 90)
        url, base, path = m.group(1), m.group(2), m.group(3)
        folder = out / Path(path).parent
        assert folder.parent == out and folder.name.endswith(f"-{INCIDENT_ID}") and Path(path).name == "triage.ipynb"
        timings["lab_ready_s"] = time.monotonic() - t0
        with chromium_page(base) as (page, offsite):

            def state() -> dict:
                try:
                    return page.evaluate(PAGE_STATE_JS)
                except Exception as e:  # noqa: BLE001 - only for a failure message: a crashed page says so
                    return {"page unavailable": repr(e)}

            def explain(what: str) -> str:
                return (f"{what}; page state {state()}; screenshot {shot}; offsite requests {offsite}\n"
                        f"--- runbook open (tail) ---\n" + "\n".join(command.lines[-40:]))

            def wait_for(condition: str, timeout_ms: int, what: str) -> None:
                try:
                    page.wait_for_function(f"(() => {{ const s = ({PAGE_STATE_JS})(); return {condition}; }})",
                                           timeout=timeout_ms, polling=100)
                except PlaywrightTimeoutError:
                    pytest.fail(explain(f"{what}: not within {timeout_ms / 1000:g} s"))

            def menu(top: str, item: re.Pattern[str]) -> None:
                page.locator("#jp-menu-panel .lm-MenuBar-itemLabel", has_text=re.compile(rf"^{top}$")).click()
                page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=item).first.click()

            try:
                page.goto(url, timeout=STEP_TIMEOUT_MS)
                wait_for(f"s.cells > 0 && s.idle && s.status.includes({KERNEL_DISPLAY!r})", STEP_TIMEOUT_MS,
                         f"the copy open and its kernel ({KERNEL_DISPLAY}) idle")
                command.children()  # the kernel, in case the server does not shut it down
                timings["kernel_idle_s"] = time.monotonic() - t0
                menu("Run", re.compile(r"^Run All Cells$"))
                wait_for("(s.executed && s.idle && s.verdict) || s.errors > 0 || s.dialog", RUN_TIMEOUT_MS,
                         "every cell run, kernel idle and the verdict shown (or an error)")
                timings["run_all_s"] = time.monotonic() - t0
                menu("File", re.compile(r"^Save( Notebook)?$"))
                _wait_for_seal(page, folder, explain)
                timings["sealed_s"] = time.monotonic() - t0
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
            _check_rendering(page, explain, headings, api_key, offsite)

            # The verdict's next step: its link opens the diagnosis prepared in the same folder.
            link = page.locator(".jp-OutputArea-output table a", has_text=f"{NEXT}.ipynb").last
            assert link.is_visible(), explain("the verdict has no link to the next runbook")
            link.click()
            expected_path = f"Path: {folder.name}/{NEXT}.ipynb"
            try:
                page.wait_for_function(f"(() => ({CURRENT_TAB_JS})().includes({expected_path!r}))",
                                       timeout=STEP_TIMEOUT_MS, polling=100)
            except PlaywrightTimeoutError:
                pytest.fail(explain(f"the link did not open {expected_path}: current tab "
                                    f"{page.evaluate(CURRENT_TAB_JS)!r}"))
            wait_for("s.cells > 0 && s.idle", STEP_TIMEOUT_MS, f"{NEXT} open and its kernel idle")
            shown = page.evaluate("() => (document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)') "
                                  "|| {}).innerText || ''")
            assert f'incident_id = "{INCIDENT_ID}"' in shown, explain("the diagnosis does not carry the incident id")
            command.children()
        assert command.terminate() == 0, command.output()
        timings["stopped_s"] = time.monotonic() - t0

    _check_record(out, folder, stack, api_key)
    assert _notebooks_state() == before, "the session changed something under notebooks/"
    assert shot_error is None, f"no screenshot: {shot_error}"
    assert shot.stat().st_size > 50_000, f"screenshot {shot} looks empty"
    print(f"timings {({k: round(v, 1) for k, v in timings.items()})}; screenshot {shot}")
