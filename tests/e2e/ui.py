"""Airflow's UI in a real browser: the system's Chromium, driven by Playwright, and page helpers.

Playwright's wheel brings its driver but no browser, and browsers cannot be downloaded
here: it drives the machine's own Chromium through ``executable_path`` (``make test``
installs Debian's ``chromium`` when none is there). Nothing here runs ``playwright install``.

The helpers follow an operator's path through Airflow 3.3's React UI and find things the
way a person does, by role, accessible name and visible text: the login form's labels, a
mapped instance by its name (``line <line_id> · <sku>``), the clear button by its label,
a trigger form's field by the label shown next to it. Three places use a URL instead,
because the UI gives them no name: opening a run or a Dag's page (the address an operator
is sent to) and the run's cell of a task in the Grid.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from playwright.sync_api import Browser, Locator, Page, Playwright, expect

from shipping.ops.airflow_api import AirflowClient

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "SHIPPING_CHROMIUM"
# The runbook's screenshots: the browser tests write them to docs/img/ when
# SHIPPING_UPDATE_SCREENSHOTS=1 is set (so a plain `make test` leaves the tree clean),
# otherwise to the session's temporary folder.
README_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "img"
SCREENSHOTS = (
    README_IMAGES
    if os.environ.get("SHIPPING_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="shipping-screens-"))
)
VIEWPORT = {"width": 1280, "height": 800}
# The UI polls the API every few seconds; on a busy 2-core machine a page can take a while.
UI_TIMEOUT_MS = 60_000
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
_AFFECTED = re.compile(r"^Affected Tasks: ([1-9]\d*)$")  # the clear dialog's count, once loaded
_COUNTED_INSTANCES = re.compile(r"^\d+ Task Instances$")  # the table's heading, "4 Task Instances"
_REQUIRED = r"\s*\*?"  # a required field's label ends in "*"


class ChromiumMissing(RuntimeError):
    """No Chromium on this machine: the browser tests cannot run (and must not pass)."""


def find_chromium() -> str:
    """The path of the system's Chromium: ``SHIPPING_CHROMIUM``, else the first on PATH.

    Raises:
        ChromiumMissing: None is installed; the message says what to install.
    """
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        if os.access(given, os.X_OK):
            return given
        raise ChromiumMissing(f"{CHROMIUM_ENV}={given} is not an executable file")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing(
        "the browser tests need Chromium and none is installed (looked for "
        f"{', '.join(CHROMIUM_NAMES)} on PATH). `make test` installs it when it can; "
        "otherwise install it yourself (Debian/Ubuntu: `apt-get install chromium`) or set "
        f"{CHROMIUM_ENV}=/path/to/chromium."
    )


def launch_chromium(playwright: Playwright, executable: str) -> Browser:
    """Start the system's Chromium headless (no sandbox as root: Chromium refuses it)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=executable, args=args)


def wait_for_run_state(
    api: AirflowClient,
    dag_id: str,
    run_id: str,
    state: str,
    *,
    timeout: float,
    grace: float = 30.0,
) -> dict[str, Any]:
    """Poll the run over REST until it is in ``state``; return it.

    A run that ends in another state fails the wait at once if it was seen running
    during the wait, or after ``grace`` seconds (a run just cleared in the UI may show its
    old state for a moment).

    Raises:
        AssertionError: Another final state, or still not there after ``timeout`` seconds.
    """
    started = time.monotonic()
    seen_active = False
    while True:
        run = api.get_run(dag_id, run_id)
        current = run["state"] if run else None
        if run is not None and current == state:
            return run
        if current in TERMINAL_RUN_STATES:
            settled = seen_active or time.monotonic() - started >= grace
            assert not settled, f"run {run_id} ended {current}, expected {state}"
        else:
            seen_active = seen_active or current is not None
        assert time.monotonic() - started < timeout, (
            f"run {run_id} is still {current} after {timeout:.0f} s, expected {state}"
        )
        time.sleep(1.0)


#: How long a test lets Airflow settle after a decision starts waiting, before it answers.
#: Airflow 3.3 race, seen in this suite: an answer given within about a second of the
#: pause can reach the instance before the scheduler has handled the executor's "success"
#: event of the pausing try; the scheduler then takes the resumed instance's state for an
#: external change, marks it up for retry, and the next try asks again (the answer is lost;
#: nothing is applied). An operator in the UI never answers that fast; a test must wait.
DECISION_SETTLE_S = 5.0


def wait_for_decision(
    api: AirflowClient, dag_id: str, run_id: str, map_index: int, *, timeout: float
) -> None:
    """Poll until the line at ``map_index`` waits for a decision (its ``decide_line`` in
    ``awaiting_input``); the run must keep running meanwhile."""
    started = time.monotonic()
    while True:
        states = {
            ti["map_index"]: ti["state"]
            for ti in api.task_instances(dag_id, run_id)
            if ti["task_id"] == "decide_line"
        }
        if states.get(map_index) == "awaiting_input":
            time.sleep(DECISION_SETTLE_S)
            return
        run = api.get_run(dag_id, run_id)
        assert run is not None
        assert run["state"] not in TERMINAL_RUN_STATES, run
        assert time.monotonic() - started < timeout, f"no decision waits in {run_id}: {states}"
        time.sleep(1.0)


class AirflowUI:
    """One browser page on Airflow's UI, with the steps of an operator's path."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)

    def login(self, username: str, password: str) -> None:
        """Sign in through the login form (Airflow's simple auth manager)."""
        page = self.page
        page.goto(f"{self.base_url}/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("link", name="Dags", exact=True)).to_be_visible()

    def open_run(self, dag_id: str, run_id: str) -> None:
        """Open a run's page (what ``Dags → <dag> → <run>`` leads to)."""
        self.page.goto(f"{self.base_url}/dags/{dag_id}/runs/{run_id}")
        expect(self.page.get_by_role("heading", name=run_id, exact=True)).to_be_visible()

    def open_mapped(self, dag_id: str, run_id: str, task_id: str) -> None:
        """The task's Task Instances tab (what its cell in the Grid leads to; the cell sits
        in the collapsed `line` task group, so the tab is opened by its address)."""
        page = self.page
        page.goto(f"{self.base_url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/mapped")
        heading = re.compile(rf"^{re.escape(task_id)} \[\d+\]$")  # "ship_item [4]"
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
        expect(page.get_by_role("heading", name=_COUNTED_INSTANCES)).to_be_visible()
        # The Grid cell's tooltip (shown on hover and focus) would cover the table.
        page.mouse.move(VIEWPORT["width"] - 10, VIEWPORT["height"] - 10)
        page.evaluate("document.activeElement && document.activeElement.blur()")
        expect(page.get_by_text(f"Run ID: {run_id}", exact=True)).to_have_count(0)

    def instance_row(self, name: str) -> Locator:
        """The row of the mapped instance named ``name`` in the Task Instances table."""
        link = self.page.get_by_role("link", name=name, exact=True)
        return self.page.get_by_role("row").filter(has=link)

    def open_instance(self, task_id: str, name: str) -> None:
        """Click the mapped instance named ``name``; its page is headed ``task [name]``."""
        self.page.get_by_role("link", name=name, exact=True).click()
        heading = self.page.get_by_role("heading", name=f"{task_id} [{name}]", exact=True)
        expect(heading).to_be_visible()

    def open_clear_dialog(self) -> Locator:
        """Press the open instance's clear button; return the Clear Task Instance dialog."""
        self.page.get_by_role("button", name="Press shift+c to clear", exact=True).click()
        title = self.page.get_by_role("heading", name="Clear Task Instance")
        dialog = self.page.get_by_role("dialog").filter(has=title)
        expect(dialog).to_be_visible()
        return dialog

    @staticmethod
    def affected_tasks(dialog: Locator) -> set[tuple[str, int]]:
        """The dialog's affected tasks as ``(task_id, map_index)``, once it has listed them."""
        counted = dialog.get_by_role("button", name=_AFFECTED)
        expect(counted).to_be_visible()
        match = _AFFECTED.match(counted.inner_text().strip())
        assert match is not None
        rows = dialog.get_by_role("region", name="Affected Tasks").get_by_role("row")
        expect(rows).to_have_count(int(match[1]) + 1)  # and the header row
        affected = set()
        for row in rows.all()[1:]:
            cells = row.get_by_role("cell").all_inner_texts()  # ☐, task, state, index, run
            affected.add((cells[1].strip(), int(cells[3])))
        return affected

    def clear_with_downstream(self, screenshot: str | None = None) -> set[tuple[str, int]]:
        """Clear the open instance with the dialog's default, Downstream; return what it cleared.

        The dialog preselects Downstream (the button shows it only by its look): the
        affected tasks it lists, returned here, are what tells. ``screenshot`` saves the
        dialog as that runbook image before confirming.
        """
        dialog = self.open_clear_dialog()
        affected = self.affected_tasks(dialog)
        if screenshot:
            self.screenshot(screenshot, dialog)
        self.confirm_clear(dialog)
        return affected

    def confirm_clear(self, dialog: Locator) -> None:
        """Press Confirm and wait until the dialog has closed (the clear is done)."""
        dialog.get_by_role("button", name="Confirm").click()
        expect(dialog).to_be_hidden()

    def open_trigger_form(self, dag_id: str) -> Locator:
        """Open the Dag's page and press its Trigger button; return the Trigger Dag dialog.

        The dialog is returned once its Run Parameters are drawn (Single Run selected),
        so that fields filled next are not reset by a late render.
        """
        page = self.page
        page.goto(f"{self.base_url}/dags/{dag_id}")
        page.get_by_role("button", name="Trigger Dag", exact=True).click()  # shows "Trigger"
        # The title reads "Trigger Dag -  <dag_id>" (two spaces in 3.3.2).
        title = re.compile(rf"^Trigger Dag - +{re.escape(dag_id)}$")
        form = page.get_by_role("dialog").filter(has=page.get_by_role("heading", name=title))
        expect(form).to_be_visible()
        expect(form.get_by_role("radio", name="Single Run")).to_be_checked()
        expect(self.run_parameters(form).get_by_role("group").first).to_be_visible()
        return form

    @staticmethod
    def run_parameters(form: Locator) -> Locator:
        """The form's Run Parameters section: one row (a group) per param of the Dag.

        Its region has no accessible name (the accordion labels it by an id holding a
        space), so it is the region that holds the rows.
        """
        return form.get_by_role("region").filter(has=form.page.get_by_role("group"))

    def param_field(self, form: Locator, title: str) -> Locator:
        """The row of the param labelled ``title`` (the param's ``title``, else its name).

        Found as the group holding that label, not with ``get_by_label``: in Airflow 3.3.2
        a text field's label points at another element's id, so the box has no name.
        """
        label = self.page.locator("label").filter(
            has_text=re.compile(rf"^{re.escape(title)}{_REQUIRED}$")
        )
        field = self.run_parameters(form).get_by_role("group").filter(has=label)
        expect(field).to_have_count(1)
        return field

    def fill_param(self, form: Locator, title: str, value: str | int) -> None:
        """Type ``value`` into the text or number field labelled ``title``."""
        field = self.param_field(form, title)
        box = field.get_by_role("textbox").or_(field.get_by_role("spinbutton"))
        box.fill(str(value))
        expect(box).to_have_value(str(value))

    def choose_param(self, form: Locator, title: str, option: str) -> None:
        """Pick ``option`` in the drop-down (a param's ``enum``) labelled ``title``."""
        field = self.param_field(form, title)
        field.get_by_role("combobox").click()
        self.page.get_by_role("option", name=option, exact=True).click()
        expect(field.get_by_text(option, exact=True)).to_be_visible()

    def submit_trigger(self, form: Locator, dag_id: str) -> str:
        """Press the form's Trigger button; the UI opens the new run: return its run id."""
        form.get_by_role("button", name="Trigger", exact=True).click()
        expect(form).to_be_hidden()
        address = re.compile(rf"/dags/{re.escape(dag_id)}/runs/([^/?#]+)$")
        self.page.wait_for_url(address)
        match = address.search(self.page.url)
        assert match is not None, self.page.url
        run_id = unquote(match[1])
        expect(self.page.get_by_role("heading", name=run_id, exact=True)).to_be_visible()
        return run_id

    def open_required_action(self, subject: str) -> None:
        """From Browse -> Required Actions (open ones), click the action titled ``subject``;
        its task instance's Required Action tab shows the form."""
        page = self.page
        page.goto(f"{self.base_url}/required_actions?response_received=false")
        page.get_by_role("link", name=subject, exact=True).click()
        page.wait_for_url(re.compile(r"/required_actions$"))
        expect(page.get_by_text(subject, exact=True)).to_be_visible()

    def decision_field(self, title: str) -> Locator:
        """The open required action's field labelled ``title`` (text or number box)."""
        label = self.page.locator("label").filter(
            has_text=re.compile(rf"^{re.escape(title)}{_REQUIRED}$")
        )
        field = self.page.get_by_role("group").filter(has=label)
        expect(field).to_have_count(1)
        return field.get_by_role("textbox").or_(field.get_by_role("spinbutton"))

    def fill_decision(self, title: str, value: str | int) -> None:
        """Type ``value`` into the open required action's field labelled ``title``."""
        box = self.decision_field(title)
        box.fill(str(value))
        expect(box).to_have_value(str(value))

    def answer(self, option: str) -> None:
        """Press the open required action's button ``option``; wait until it is answered
        (the form's buttons are disabled then)."""
        button = self.page.get_by_role("button", name=option, exact=True)
        button.click()
        expect(button).to_be_disabled()

    def expect_instance_state(self, name: str, state: str) -> None:
        """The row of instance ``name`` shows ``state`` (``Failed``, ``Success``, ...)."""
        cell = self.instance_row(name).get_by_role("cell", name=state, exact=True)
        expect(cell).to_be_visible()

    def screenshot(self, name: str, element: Locator | None = None) -> Path:
        """Save the page (or one element) as ``<name>`` (``docs/img/`` on request)."""
        return self.screenshot_to(SCREENSHOTS / name, element)

    def screenshot_to(self, path: Path, element: Locator | None = None) -> Path:
        """Save the page (or one element) as ``path``."""
        (element or self.page).screenshot(path=path, animations="disabled")
        return path
