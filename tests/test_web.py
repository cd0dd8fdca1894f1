"""The door's web page, in Debian's headless Chromium, against a real `facegate run`: the door on a
looping video with the relay on a pseudo-terminal, the page as the child process it starts.

The tests share one door and run in order (the lockout comes last: it locks this address out).
`make screenshots` runs the screenshot test with FACEGATE_SCREENSHOTS set to keep its pictures.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from appliance.audit import AuditStore
from appliance.gallery.store import GalleryStore
from conftest import LFW, MODELS, ROOT, wait_until
from test_service import PROBES, STRANGERS, gallery_path, make_clip  # noqa: F401 (fixture)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PASSWORD = "correct horse battery"
NEWCOMER = LFW / "images" / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Debian's chromium and chromium-driver are missing: run 'make system-deps'")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def door(tmp_path_factory, gallery_path):  # noqa: F811
    from facegate_host.emulator import RelayEmulator

    folder = tmp_path_factory.mktemp("webdoor")
    gallery = folder / "gallery.db"
    shutil.copy(gallery_path, gallery)
    # zhangxueyou.jpg: a face too small to decide on, which the live view says so of
    clip = make_clip(folder / "door.mp4", [PROBES / "obama.jpg", STRANGERS[0], PROBES / "ldh.jpg",
                                           PROBES / "zhangxueyou.jpg"], seconds=3.0)
    relay = RelayEmulator(link=str(folder / "relay"))
    port = free_port()
    config = folder / "door.toml"
    config.write_text("""
[models]
dir = "{models}"
[gallery]
path = "{folder}/gallery.db"
[audit]
path = "{folder}/audit.db"
[camera]
source = "{clip}"
realtime = true
loop = true
[relay]
port = "{relay}"
[door]
unlock_seconds = 1.0
deny_seconds = 0.3
cooldown_seconds = 0.3
person_cooldown_seconds = 2.0
[web]
enabled = true
address = "127.0.0.1"
port = {port}
users_file = "{folder}/web-users.json"
cert_file = "{folder}/web-cert.pem"
key_file = "{folder}/web-key.pem"
live_dir = "{folder}/web-live"
""".format(models=MODELS, folder=folder, clip=clip, relay=relay.path, port=port))
    added = subprocess.run([sys.executable, "-m", "appliance", "web", "passwd", "ada", "--config", str(config),
                            "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    log = open(folder / "door.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config)], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    site = {"folder": folder, "config": config, "url": "https://127.0.0.1:%d" % port, "port": port,
            "relay": relay, "process": process, "gallery": gallery, "audit": folder / "audit.db"}
    try:
        assert wait_until(lambda: answers(site), timeout=60), (folder / "door.log").read_text()
        yield site
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        relay.close()


def answers(site):
    try:
        return request(site, "GET", "/login")[0] == 200
    except OSError:
        return False


def request(site, method, path, body=None, headers=None, cookie=None):
    """(status, headers, body) of one request, certificate unchecked (the door made its own)."""
    connection = http.client.HTTPSConnection("127.0.0.1", site["port"], timeout=20,
                                             context=ssl._create_unverified_context())
    headers = dict(headers or {})
    if cookie:
        headers["Cookie"] = cookie
    if isinstance(body, dict):
        body = urllib.parse.urlencode(body)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return result


@pytest.fixture(scope="module")
def browser(door):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--ignore-certificate-errors",
                     "--window-size=390,844", "--lang=en"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(driver, predicate, timeout=20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda _: predicate())


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def log_in(driver, site, password=PASSWORD):
    driver.get(site["url"] + "/login")
    css(driver, "input[name=user]")[0].send_keys("ada")
    css(driver, "input[name=password]")[0].send_keys(password)
    submit(driver, css(driver, "form button")[0])


def submit(driver, button):
    """Click a button that loads a page, and wait until the new page replaced the old one."""
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    old = driver.find_element("tag name", "html")
    button.click()

    def replaced(_) -> bool:
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as err:  # chromedriver's word for the same, caught mid-navigation
            if "does not belong to the document" in str(err):
                return True
            raise

    WebDriverWait(driver, 60).until(replaced)


def shown(driver, selector):
    """The text of the first element matching `selector`, or what the page said instead."""
    found = css(driver, selector)
    if not found:
        main = css(driver, "main")
        raise AssertionError("no %s on %s: %s" % (selector, driver.current_url, main[0].text if main else
                                                  driver.page_source[:1000]))
    return found[0].text


def session_cookie(driver):
    return "facegate_session=%s" % driver.get_cookie("facegate_session")["value"]


def changes(site, action):
    store = AuditStore(site["audit"])
    try:
        return [e for e in store.events(limit=10000, kind="change") if e.detail.get("action") == action]
    finally:
        store.close()


def test_logging_in_opens_the_live_view_with_the_doors_face_boxes_and_names(door, browser):
    log_in(browser, door)
    wait_for(browser, lambda: browser.current_url.endswith("/live"))
    cookie = browser.get_cookie("facegate_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    # the frame arrives, and the door's own names for the faces in it come with it
    wait_for(browser, lambda: browser.execute_script("return document.getElementById('frame').naturalWidth") > 0)
    seen, boxes = set(), []

    def named():
        # read in one script: the page redraws these lists at every tick
        seen.update(browser.execute_script(
            "return Array.from(document.querySelectorAll('#faces li.face')).map(e => e.textContent)"))
        boxes.extend(browser.execute_script(
            "return Array.from(document.querySelectorAll('#overlay rect')).map(e => e.getAttribute('stroke'))"))
        return (any(text.startswith("obama") for text in seen) and any(text.startswith("unknown") for text in seen)
                and any("too small" in text and "come closer" in text for text in seen))
    wait_for(browser, named, timeout=90)  # a fresh machine's first door can take a while to reach full speed
    assert "#22c55e" in boxes  # a named face is boxed in green
    assert "FAULT" not in css(browser, "#door-state")[0].text


def test_grants_and_denials_appear_with_their_snapshots_and_a_label_is_checked_against_the_face(door, browser):
    def both():
        browser.get(door["url"] + "/attempts")
        return css(browser, "li.attempt.grant") and css(browser, "li.attempt.deny")
    wait_for(browser, both, timeout=40)
    grant = css(browser, "li.attempt.grant")[0]
    assert "obama" in grant.text or "刘德华" in grant.text
    snapshot = grant.find_element("css selector", "img")
    wait_for(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", snapshot) > 0)
    # labelling a granted face "a stranger" contradicts the door's rule: asked again, nothing stored yet
    event_id = int(grant.get_attribute("id").split("-")[1])
    grant.find_element("css selector", "select option[value=stranger]").click()
    submit(browser, grant.find_element("css selector", "form button"))
    assert "accepts this face as" in shown(browser, "#confirm-label")
    store = AuditStore(door["audit"])
    assert store.events(limit=1, since_id=event_id - 1)[0].label is None
    store.close()
    # a denial labelled a stranger agrees with the rule: stored at once, as tuning evidence
    deny = css(browser, "li.attempt.deny")[0]
    deny_id = int(deny.get_attribute("id").split("-")[1])
    deny.find_element("css selector", "select option[value=stranger]").click()
    submit(browser, deny.find_element("css selector", "form button"))
    assert "labelled stranger" in shown(browser, "#message")
    store = AuditStore(door["audit"])
    assert store.events(limit=1, since_id=deny_id - 1)[0].label == "stranger"
    store.close()
    labelled = changes(door, "label")
    assert labelled[-1].detail["origin"] == {"via": "web", "user": "ada", "address": "127.0.0.1"}


def phone_photo(source, path):
    """As a phone stores a portrait: twice LFW's size, the pixels sideways, an EXIF tag to turn them."""
    from PIL import Image

    upright = Image.open(source).resize((500, 500))
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=92, exif=exif.tobytes())
    return path


def test_a_phone_photo_enrols_a_new_person_shown_with_a_thumbnail_and_audited_with_the_page_user(door, browser):
    photo = phone_photo(NEWCOMER, door["folder"] / "phone.jpg")
    browser.get(door["url"] + "/people")
    form = css(browser, "#enrol-photos")[0]
    form.find_element("css selector", "input[name=name]").send_keys("Abdullah Gul")
    form.find_element("css selector", "input[name=photos]").send_keys(str(photo))
    form.find_element("css selector", "input[name=card]").send_keys("7:4242")  # the panel's card, with the person
    submit(browser, form.find_element("css selector", "button"))
    assert "enrolled Abdullah Gul from 1 photos with card 7:4242" in shown(browser, "#message")
    row = [p for p in css(browser, "li.person") if "Abdullah Gul" in p.text][0]
    assert "card 7:4242" in row.text
    thumbnail = row.find_element("css selector", "img")
    wait_for(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", thumbnail) == 112)
    enrolled = changes(door, "enroll")[-1]
    assert enrolled.detail["origin"]["user"] == "ada" and enrolled.detail["card"] == "7:4242"
    # the same face again, under another name: refused as a duplicate, with the way to insist
    form = css(browser, "#enrol-photos")[0]
    form.find_element("css selector", "input[name=name]").send_keys("A. Gul")
    form.find_element("css selector", "input[name=photos]").send_keys(str(photo))
    submit(browser, form.find_element("css selector", "button"))
    assert "looks like Abdullah Gul" in shown(browser, "#error")


def test_the_camera_enrols_the_person_in_front_of_the_door_with_guidance(door, browser):
    browser.get(door["url"] + "/people")
    form = css(browser, "#enrol-camera")[0]
    form.find_element("css selector", "input[name=name]").send_keys("Visitor")
    form.find_element("css selector", "input[name=force]").click()  # whoever the clip shows may be enrolled
    submit(browser, form.find_element("css selector", "button"))
    wait_for(browser, lambda: browser.current_url.endswith("/people/capture"))
    wait_for(browser, lambda: shown(browser, "#result"), timeout=45)
    assert "enrolled Visitor from 3 camera frames" in shown(browser, "#result")
    store = GalleryStore(door["gallery"])
    assert store.find("Visitor").templates == 3
    store.close()


def test_a_change_without_the_pages_token_or_from_another_site_is_refused(door, browser):
    browser.get(door["url"] + "/people")
    cookie = session_cookie(browser)
    target = "/people/obama/disable"
    assert request(door, "POST", target, {}, cookie=cookie)[0] == 403
    token = css(browser, "input[name=csrf]")[0].get_attribute("value")
    assert request(door, "POST", target, {"csrf": token}, {"Origin": "https://evil.example"}, cookie=cookie)[0] == 403
    assert request(door, "POST", target, {"csrf": "x" + token}, cookie=cookie)[0] == 403
    store = GalleryStore(door["gallery"])
    assert store.find("obama").enabled
    store.close()
    # nobody unauthenticated reads people, faces or attempts
    store = GalleryStore(door["gallery"])
    obama = store.find("obama").id
    store.close()
    for path in ("/people", "/people/%s/face.png" % obama, "/attempts/1/snapshot.jpg", "/door/audit.csv",
                 "/live/frame.jpg"):
        status, headers, _ = request(door, "GET", path)
        assert status in (303, 401) and (status == 401 or headers["Location"].endswith("/login")), path
    # with the token, the same change goes through, once
    assert request(door, "POST", target, {"csrf": token}, cookie=cookie)[0] == 303
    store = GalleryStore(door["gallery"])
    assert not store.find("obama").enabled
    store.set_enabled("obama", True)
    store.close()


def test_a_threshold_change_shows_before_and_after_asks_and_reaches_the_running_door(door, browser):
    browser.get(door["url"] + "/tune")
    assert "the door now: threshold" in shown(browser, "#report")
    form = css(browser, "#set-threshold")[0]
    form.find_element("css selector", "input[name=threshold]").send_keys("0.45")
    submit(browser, form.find_element("css selector", "button"))
    confirm = css(browser, "#confirm-threshold")[0]
    assert "(now)" in confirm.text and "0.450 (new)" in confirm.text
    assert "distance_threshold" not in door["config"].read_text()  # nothing changed before the confirmation
    submit(browser, confirm.find_element("css selector", "button"))
    assert "the door now decides with threshold 0.450" in shown(browser, "#message")
    assert "distance_threshold = 0.45" in door["config"].read_text()
    assert {"set_threshold"} <= {e.detail["action"] for e in changes(door, "set_threshold")}
    assert all(e.detail["origin"]["user"] == "ada" for e in changes(door, "set_threshold"))
    # one that would let strangers in is refused, unless forced
    browser.get(door["url"] + "/tune")
    form = css(browser, "#set-threshold")[0]
    form.find_element("css selector", "input[name=threshold]").send_keys("0.95")
    submit(browser, form.find_element("css selector", "button"))
    submit(browser, css(browser, "#confirm-threshold button")[0])
    assert "not applied" in shown(browser, "#error")
    assert "distance_threshold = 0.45" in door["config"].read_text()


def test_the_relay_test_opens_the_door_through_the_door_and_the_trail_exports_as_csv(door, browser):
    import time

    browser.get(door["url"] + "/door")
    asked = time.monotonic()
    submit(browser, css(browser, "#relay-test button")[0])
    message = css(browser, "#message")
    assert message and "the relay opened" in message[0].text, browser.page_source[:2000]
    # an "on" frame after the request (a grant of the looping video may have had it on already:
    # then it is a frame of the same state, not a change)
    assert wait_until(lambda: any(e.on and e.at >= asked for e in list(door["relay"].events)), timeout=5)
    store = AuditStore(door["audit"])
    unlocked = store.events(limit=1, kind="remote_unlock", newest=True)[0]
    store.close()
    assert unlocked.detail["source"] == "web" and unlocked.detail["origin"]["user"] == "ada"
    status, headers, body = request(door, "GET", "/door/audit.csv?kind=remote_unlock",
                                    cookie=session_cookie(browser))
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = body.decode().splitlines()
    assert lines[0].startswith("id,time_utc,kind") and "web:ada@127.0.0.1" in lines[1]


def test_the_door_page_runs_the_self_test_beside_the_running_door(door, browser):
    browser.get(door["url"] + "/door")
    assert "none configured" in shown(browser, "#status")  # inputs: this door has none
    submit(browser, css(browser, "#selftest button")[0])
    result = shown(browser, "#selftest-result")
    assert "models          ok" in result and result.endswith("selftest passed")
    assert door["process"].poll() is None


def test_removing_a_person_asks_first(door, browser):
    browser.get(door["url"] + "/people?q=Gul")
    assert [p.text.split("\n")[0] for p in css(browser, "li.person .name")] == ["Abdullah Gul"]
    row = [p for p in css(browser, "li.person") if "Abdullah Gul" in p.text][0]
    row.find_element("css selector", "details summary").click()
    browser.execute_script("arguments[0].value = '2026-12-31'",  # a date picker's value, whatever its locale
                           row.find_element("css selector", "input[name=valid_until]"))
    submit(browser, row.find_element("css selector", "details button"))
    assert "Abdullah Gul: valid from any time until 2026-12-31" in shown(browser, "#message")
    row = [p for p in css(browser, "li.person") if "Abdullah Gul" in p.text][0]
    assert "until 2026-12-31" in row.text
    # a card belongs to one person: giving obama Abdullah Gul's is refused, and nothing changes
    browser.get(door["url"] + "/people?q=obama")
    obama = css(browser, "li.person")[0]
    card_form = obama.find_elements("css selector", "details")[1]
    card_form.find_element("css selector", "summary").click()
    card_form.find_element("css selector", "input[name=card]").send_keys("7:4242")
    submit(browser, card_form.find_element("css selector", "button"))
    assert "card 7:4242 belongs to Abdullah Gul already" in shown(browser, "#error")
    browser.get(door["url"] + "/people?q=Gul")
    row = [p for p in css(browser, "li.person") if "Abdullah Gul" in p.text][0]
    card_form = row.find_elements("css selector", "details")[1]
    card_form.find_element("css selector", "summary").click()
    card_form.find_element("css selector", "input[name=card]").clear()  # empty: the card is taken away
    submit(browser, card_form.find_element("css selector", "button"))
    assert "Abdullah Gul: no card" in shown(browser, "#message")
    assert changes(door, "person_card")[-1].detail["card"] is None
    row = [p for p in css(browser, "li.person") if "Abdullah Gul" in p.text][0]
    submit(browser, row.find_element("css selector", "a.danger"))
    assert "Remove Abdullah Gul?" in browser.page_source
    submit(browser, css(browser, "#confirm-remove")[0])
    assert "removed Abdullah Gul" in shown(browser, "#message")
    assert not [p for p in css(browser, "li.person") if "Abdullah Gul" in p.text]


def test_a_crashed_page_restarts_and_the_door_never_stops(door, browser):
    live = door["folder"] / "web-live" / "status.json"
    page = subprocess.run(["pgrep", "-f", "appliance web serve --config %s" % door["config"]],
                          capture_output=True, text=True).stdout.split()
    assert len(page) == 1
    os.kill(int(page[0]), signal.SIGKILL)
    first = json.loads(live.read_text())["time"]
    assert wait_until(lambda: json.loads(live.read_text())["time"] > first + 1, timeout=10)  # the door goes on
    assert door["process"].poll() is None
    assert wait_until(lambda: answers(door), timeout=20)


def test_every_page_fits_a_phone_and_a_desktop(door, browser):
    """Nothing wider than a phone's screen; the screenshots go to FACEGATE_SCREENSHOTS if set."""
    keep = os.environ.get("FACEGATE_SCREENSHOTS")
    log_in(browser, door)  # the page restarted above: its sessions were in memory
    wait_for(browser, lambda: browser.current_url.endswith("/live"))
    for width, height, size in ((390, 844, "phone"), (1280, 900, "desktop")):
        browser.set_window_size(width, height)
        for name in ("live", "people", "attempts", "tune", "door"):
            browser.get(door["url"] + "/" + name)
            if name == "live":
                wait_for(browser, lambda: browser.execute_script("return document.querySelectorAll('#faces li.face')"
                                                                 ".length"), timeout=30)
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(str(Path(keep) / ("%s-%s.png" % (name, size))))
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            widest = browser.execute_script(
                "var w = null; document.querySelectorAll('main *').forEach(function (e) {"
                " if (e.getBoundingClientRect().right > window.innerWidth + 1 && !w) w = e.outerHTML.slice(0, 120); });"
                " return w;")
            assert overflow <= 1, "%s overflows a %s screen by %d px: %s" % (name, size, overflow, widest)
    browser.set_window_size(390, 844)


def test_too_many_wrong_passwords_lock_the_user_out_even_with_the_right_one(door, browser):
    browser.delete_all_cookies()
    for _ in range(5):
        log_in(browser, door, password="wrong password!")
    assert "too many wrong passwords" in shown(browser, "#error")
    log_in(browser, door)
    assert "too many wrong passwords" in shown(browser, "#error")
    assert not browser.current_url.endswith("/live")
    assert changes(door, "login_lockout")[-1].detail["user"] == "ada"
