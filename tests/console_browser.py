#!/usr/bin/env python3
"""Drives the paas web console in Debian's chromium (headless) through selenium.

Run by tests/console.rs against a real `paas serve`; prints `RESULT OK` when every step
passed, and exits non-zero with the step that failed otherwise.

    console_browser.py lifecycle URL SHOTS        anonymous server, product registered,
                                                   mesos-local reaching `ready`
    console_browser.py tokens URL SHOTS USER_TOKEN USER_NAME
                                                   server with --tokens, product registered

The browser and its driver are the system's (/usr/bin/chromium, /usr/bin/chromedriver),
named explicitly so that Selenium Manager never downloads anything.
"""
import os
import re
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 800)
PHONE = (390, 844)


def log(msg):
    print(msg, flush=True)


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", "--lang=en-GB"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def viewport(d, size, mobile=False):
    """The page's viewport, exactly `size` CSS pixels (a window size would include chrome)."""
    w, h = size
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile})


def wait(d, what, cond, secs=20):
    """Waits until `cond(d)` is truthy; fails naming `what` and the page's error banner."""
    try:
        return WebDriverWait(d, secs, poll_frequency=0.1).until(lambda drv: cond(drv))
    except TimeoutException:
        raise AssertionError(f"timed out after {secs} s waiting for {what}; "
                             f"live: {text(d, '#live')!r}; banner: {text(d, '#error')!r}")


def find(d, css):
    found = d.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


# The console redraws its tables as events come: read the page in one script call each, so
# that an element replaced between two calls cannot be read half-way.
def text(d, css):
    return d.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null", css)


def attr(d, css, name):
    return d.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null",
        css, name)


def shown(d, css):
    return d.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return !!e && e.getClientRects().length > 0", css)


def click(d, css):
    """Clicks `css` once it is shown and enabled (again if it was redrawn meanwhile)."""
    def clicked(drv):
        try:
            el = find(drv, css)
            if el is None or not el.is_displayed() or not el.is_enabled():
                return False
            el.click()
            return True
        except StaleElementReferenceException:
            return False
    wait(d, f"{css} to be clickable", clicked)


def type_into(d, css, value):
    wait(d, f"{css} to be shown", lambda drv: shown(drv, css))
    el = find(d, css)
    el.clear()
    el.send_keys(value)


def shot(d, path, at=None):
    """Saves the viewport, scrolled to the top or to the element `at`."""
    if at:
        d.execute_script("document.querySelector(arguments[0]).scrollIntoView()", at)
    else:
        d.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.3)
    assert d.save_screenshot(path), path
    log(f"screenshot {path}")


def no_script_errors(d):
    """No uncaught exception and no Content-Security-Policy violation in the page's log.
    (Failed loads are not listed: the API's 4xx answers are logged by the browser too.)"""
    bad = [e for e in d.get_log("browser")
           if e.get("source") in ("javascript", "security")
           or "Content Security Policy" in e.get("message", "")
           or "Uncaught" in e.get("message", "")]
    assert not bad, f"errors in the browser's console: {bad}"


def mark_page(d):
    """A marker that only this page load carries: still there later means no reload."""
    d.execute_script("window.__consoleTestPage = 'same page'")


def same_page(d):
    return d.execute_script("return window.__consoleTestPage") == "same page"


def cluster_status(d, cid):
    return attr(d, f'#clusters tr[data-cluster="{cid}"]', "data-status")


def record_statuses(d):
    """Records every status the cluster table draws, as the page draws it (a
    MutationObserver), so that a status shown between two polls of the test is not missed:
    a cluster can go from `registered` to `ready` within one poll interval."""
    d.execute_script("""
        window.__statusesDrawn = [];
        const table = document.querySelector('#clusters');
        const note = () => table.querySelectorAll('tr[data-cluster]').forEach((tr) =>
            window.__statusesDrawn.push([tr.dataset.cluster, tr.dataset.status]));
        new MutationObserver(note).observe(table, {
            subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
    """)


def statuses_drawn(d, cid):
    return {s for c, s in d.execute_script("return window.__statusesDrawn") if c == cid and s}


def open_product(d):
    wait(d, "the reference product in the list", lambda drv: shown(drv, '[data-product="reference/1.0.0"]'))
    click(d, '[data-product="reference/1.0.0"]')
    wait(d, "the launch form with its size field", lambda drv: shown(drv, "#opt-size"))


def launch(d, size):
    """Launches from the form; the new cluster's id."""
    type_into(d, "#opt-size", size)
    click(d, "#launch-submit")
    wait(d, "the launch to be accepted",
         lambda drv: "form-ok" in (attr(drv, "#launch-result", "class") or ""))
    m = re.search(r"Launched cluster ([0-9a-f-]{36})", text(d, "#launch-result"))
    assert m, text(d, "#launch-result")
    return m.group(1)


def wait_ready(d, cid, generation, secs, what):
    """Waits until the list and the detail pane show the cluster `ready` at `generation`."""
    def ready(drv):
        st = cluster_status(drv, cid)
        assert st != "failed", f"cluster {cid} failed: {text(drv, '#detail')}"
        return (st == "ready" and attr(drv, "#detail", "data-status") == "ready"
                and attr(drv, "#detail", "data-generation") == str(generation))
    wait(d, what, ready, secs)


def lifecycle(url, shots):
    d = browser()
    try:
        viewport(d, DESKTOP)
        d.get(url + "/")
        mark_page(d)
        wait(d, "the live event stream", lambda drv: attr(drv, "#live", "data-state") == "live")
        open_product(d)
        # The launch form shows the options document: sections and descriptions.
        form = text(d, "#launch-form")
        for want in ("Required", "Optional", "size", "number of nodes", "cpu", "CPU shares per node",
                     "mem", "memory per node, in MB"):
            assert want in form, f"{want!r} not in the launch form: {form}"

        # A bad value: the API's own words, under the form.
        type_into(d, "#opt-size", "two")
        click(d, "#launch-submit")
        wait(d, "the refusal of size=two",
             lambda drv: "form-error" in (attr(drv, "#launch-result", "class") or ""))
        refusal = text(d, "#launch-result")
        assert "wrong type: size (expected integer)" in refusal and "invalid_options, HTTP 400" in refusal, refusal
        log(f"refusal shown: {refusal.splitlines()[0]}")

        record_statuses(d)
        cid = launch(d, "2")
        log(f"launched {cid} from the form")
        wait(d, "the new cluster in the list", lambda drv: cluster_status(drv, cid) is not None)
        seen = set()

        def ready_or_record(drv):
            st = cluster_status(drv, cid)
            seen.add(st)
            assert st != "failed", f"cluster {cid} failed: {text(drv, '#detail')}"
            return st == "ready" and attr(drv, "#detail", "data-status") == "ready"
        wait(d, "ready to arrive without a reload", ready_or_record, 120)
        # The console does not poll: a status seen changing on this page came from the stream.
        seen.discard(None)
        seen |= statuses_drawn(d, cid)
        assert len(seen) >= 2, f"no status change drawn, only {seen}"
        assert same_page(d), "the page was reloaded"
        assert attr(d, "#live", "data-state") == "live", text(d, "#live")
        log(f"ready arrived live; statuses seen in the list: {sorted(seen)}")
        wait(d, "two running nodes", lambda drv: len(drv.find_elements(
            By.CSS_SELECTOR, '#detail tr[data-node][data-status="running"]')) == 2)
        shot(d, os.path.join(shots, "console-1280x800.png"))

        click(d, 'button[data-tab="events"]')
        wait(d, "the history in the events tab", lambda drv: "configuring" in (text(drv, "#detail .tab-body") or ""))
        click(d, 'button[data-tab="services"]')
        wait(d, "the services tab", lambda drv: "No services" in (text(drv, "#detail .tab-body") or ""))
        click(d, 'button[data-tab="logs"]')
        wait(d, "the orchestration script's summary in the logs",
             lambda drv: "reference cluster configured" in (text(drv, "#logs") or ""))
        shot(d, os.path.join(shots, "console-logs-1280x800.png"))
        log("logs shown")

        # Scale 2 -> 3 through the options form (PATCH).
        click(d, 'button[data-tab="options"]')
        type_into(d, "#upd-size", "3")
        click(d, "#update-submit")
        wait(d, "the update to be accepted",
             lambda drv: "Update accepted: generation 2, the cluster is updating" in (text(drv, "#action-result") or ""))
        wait_ready(d, cid, 2, 120, "ready at generation 2 after scaling to 3")
        click(d, 'button[data-tab="nodes"]')
        wait(d, "three running nodes", lambda drv: len(drv.find_elements(
            By.CSS_SELECTOR, '#detail tr[data-node][data-status="running"]')) == 3, 60)
        log("scaled to 3 nodes")

        # Restart a node's services in place (asks for confirmation first).
        click(d, 'button[data-action="restart"][data-node="node1"]')
        click(d, 'button[data-action="restart"][data-node="node1"]')
        wait(d, "the restart to be accepted",
             lambda drv: "Restart of node1 accepted" in (text(drv, "#action-result") or ""))
        accepted = re.search(r"generation (\d+), the cluster is updating", text(d, "#action-result"))
        assert accepted, text(d, "#action-result")
        wait_ready(d, cid, accepted.group(1), 120, "ready again after the restart")
        log("node1 restarted")

        viewport(d, PHONE, mobile=True)
        time.sleep(0.5)
        overflow = d.execute_script("return document.documentElement.scrollWidth")
        assert overflow <= PHONE[0], f"the page is {overflow} px wide on a {PHONE[0]} px phone"
        shot(d, os.path.join(shots, "console-phone-390x844.png"), at="#clusters-title")
        viewport(d, DESKTOP)

        click(d, "#destroy")
        wait(d, "the destroy button to ask for confirmation", lambda drv: text(drv, "#destroy") == "Confirm destroy")
        click(d, "#destroy")
        wait(d, "destroyed", lambda drv: cluster_status(drv, cid) == "destroyed", 90)
        assert same_page(d), "the page was reloaded"
        log("destroyed")
        no_script_errors(d)
    finally:
        d.quit()


def tokens(url, shots, user_token, user_name):
    d = browser()
    try:
        viewport(d, DESKTOP)
        d.get(url + "/")
        wait(d, "the token field", lambda drv: shown(drv, "#token"))
        wait(d, "the API's refusal without a token",
             lambda drv: text(drv, "#error-message") == "missing Authorization: Bearer <token>")

        type_into(d, "#token", "not-a-valid-token-000")
        click(d, '#token-form button[type="submit"]')
        wait(d, "the API's refusal of a wrong token",
             lambda drv: text(drv, "#error-message") == "unknown token")
        assert text(d, "#error-code") == "(unauthorized, HTTP 401)", text(d, "#error-code")
        shot(d, os.path.join(shots, "console-wrong-token.png"))
        log("wrong token: 'unknown token' shown")

        type_into(d, "#token", user_token)
        click(d, '#token-form button[type="submit"]')
        wait(d, "the banner to go", lambda drv: not shown(drv, "#error"))
        wait(d, "the live event stream", lambda drv: attr(drv, "#live", "data-state") == "live")
        stored = d.execute_script(f"return sessionStorage.getItem('paas.token')")
        assert stored == user_token, "the token is kept in sessionStorage"
        assert d.execute_script("return localStorage.length") == 0, "nothing in localStorage"

        open_product(d)
        cid = launch(d, "1")
        wait(d, "the user's cluster in the list", lambda drv: cluster_status(drv, cid) is not None)
        owner = text(d, f'#clusters tr[data-cluster="{cid}"] td:nth-child(3)')
        assert owner == user_name, owner
        log(f"launched {cid} as {owner}")

        # The token survives a reload of the page (same tab: sessionStorage).
        d.refresh()
        wait(d, "the cluster after a reload, without typing the token again",
             lambda drv: cluster_status(drv, cid) is not None)
        assert not shown(d, "#error"), text(d, "#error")
        no_script_errors(d)
    finally:
        d.quit()


def main():
    mode, url, shots = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
    os.makedirs(shots, exist_ok=True)
    if mode == "lifecycle":
        lifecycle(url, shots)
    elif mode == "tokens":
        tokens(url, shots, sys.argv[4], sys.argv[5])
    else:
        raise SystemExit(f"unknown mode {mode}")
    log("RESULT OK")


if __name__ == "__main__":
    main()
