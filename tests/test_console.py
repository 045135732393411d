#!/usr/bin/python3
"""The web console (docs/console.md) in a real browser: Debian's chromium,
headless, driven through chromium-driver by python3-selenium, against the
whole system secured (HTTPS with the test CA, API keys). The page loads
without console errors and asks for the key; an order placed through the form
appears on the live board and reaches Approved without a reload; a sold-out
order's page shows its refund in the timeline; the health panel shows the
event store's figures. Saves a screenshot (ORDO_CONSOLE_SHOT, default in the
cluster's directory; docs/console.png was made so)."""
import os
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from harness import FlowCluster, run_tests


def browser(c):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
              f"--user-data-dir={os.path.join(c.dir, 'chromium')}", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    opts.accept_insecure_certs = True   # the test CA is not in the browser's store: the HTTPS is still HTTPS
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=ChromeService("/usr/bin/chromedriver", log_path=os.path.join(c.dir, "chromedriver.log")),
                            options=opts)


def severe_logs(d):
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def place_with_form(d, preset):
    d.find_element(By.CSS_SELECTOR, f"[data-preset='{preset}']").click()
    d.find_element(By.ID, "place").click()
    WebDriverWait(d, 20).until(
        lambda d: d.find_element(By.ID, "placed").get_attribute("data-order-id") not in (None, "", d.placed))
    oid = d.find_element(By.ID, "placed").get_attribute("data-order-id")
    d.placed = oid
    return oid


def test_console(c, t):
    d = browser(c)
    d.placed = None
    try:
        d.get(c.api + "/console")
        WebDriverWait(d, 20).until(EC.visibility_of_element_located((By.ID, "keypanel")))
        t.ok(True, "the console loads and asks for an API key (keys are on)")
        t.eq(severe_logs(d), [], "no console errors before the key (the page asks /healthz whether keys are on: nothing refused)")
        d.find_element(By.ID, "key").send_keys(c.api_key)
        d.find_element(By.CSS_SELECTOR, "#keyform button").click()
        WebDriverWait(d, 20).until(EC.visibility_of_element_located((By.ID, "app")))
        WebDriverWait(d, 20).until(EC.text_to_be_present_in_element((By.ID, "live"), "live"))
        t.ok(True, "with the staff key: the app, and the live stream connected")
        stored = d.execute_script("return sessionStorage.getItem('ordo.key')")
        kept = d.execute_script("return localStorage.length")
        t.ok(stored == c.api_key and kept == 0, "the key is kept in sessionStorage only (this tab's session)")

        approved = place_with_form(d, "ok")
        card = f".column[data-status='Approved'] .card[data-order-id='{approved}']"
        WebDriverWait(d, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, card)))
        t.ok(True, f"the order placed through the form appears on the board and reaches Approved ({approved[:8]})")
        refunded = place_with_form(d, "soldout")
        card = f".column[data-status='Refunded'] .card[data-order-id='{refunded}']"
        WebDriverWait(d, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, card)))
        t.ok(True, "a sold-out order reaches Refunded on the board")
        failed = place_with_form(d, "over")
        card = f".column[data-status='PaymentFailed'] .card[data-order-id='{failed}']"
        WebDriverWait(d, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, card)))
        t.ok(True, "an order over the payment limit reaches PaymentFailed")
        t.eq(d.execute_script("return performance.getEntriesByType('navigation').length"), 1,
             "all without a reload (one navigation)")

        d.find_element(By.CSS_SELECTOR, f".card[data-order-id='{refunded}']").click()
        WebDriverWait(d, 20).until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, "#timeline li[data-type='order-payment-refunded']")))
        types = [li.get_attribute("data-type") for li in d.find_elements(By.CSS_SELECTOR, "#timeline li")]
        t.eq(types, ["order-created", "order-payment-debited", "order-rejected", "order-payment-refunded"],
             "the rejected order's page: its timeline ends with the refund")
        t.eq(d.find_element(By.CSS_SELECTOR, "#detail-state b").text, "Refunded", "and its state is Refunded")

        WebDriverWait(d, 20).until(lambda d: "ok" == d.find_element(By.ID, "health-status").text)
        health = d.find_element(By.ID, "health").text
        t.ok("outbox backlog" in health and "paymentsvc" in health and "orderquery" in health,
             "the health panel shows the outbox backlog and the consumers' lag")
        t.eq(severe_logs(d), [], "no console errors along the way")
        shot = os.environ.get("ORDO_CONSOLE_SHOT") or os.path.join(c.dir, "console.png")
        time.sleep(1.5)   # (the cards' highlight fades)
        d.save_screenshot(shot)
        t.ok(os.path.getsize(shot) > 10000, f"screenshot saved: {shot}")
    finally:
        d.quit()


if __name__ == "__main__":
    run_tests([test_console], lambda: FlowCluster(tls=True))
