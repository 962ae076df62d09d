"""A class launched from the university's LMS with LTI 1.3 (issue 33), against the real hub.

A stand-in LMS: an RSA key pair whose public half it serves as a JSON Web Key Set over HTTP, and the signed
id_token it would post back after the hub's login initiation. The hub runs as `labutils hub start --lti`
configures it (jupyterhub-ltiauthenticator, peft_grader.hub_lti). A signed launch logs a student of the class
into their own account; a launch signed with another key, a launch replayed in another browser, and launches for
someone the class did not enrol (no account, an account of the machine, root) log nobody in. Root only.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from class_accounts import class_machine, fresh_names, wait_for_hub

from peft_grader import hub

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a class hub makes Unix accounts: root only")

ISSUER = "https://lms.example.edu"
CLIENT = "peft-course-tool"
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DEPLOYMENT, COURSE = "1", "peft-101"  # where the instructor deployed the tool: this course only


def key_pair():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextlib.contextmanager
def lms_keys(public_key, kid: str):
    """The LMS's JWKS end-point, serving `public_key`: its URL."""
    from jwt.algorithms import RSAAlgorithm

    jwks = json.dumps({"keys": [json.loads(RSAAlgorithm.to_jwk(public_key)) | {"kid": kid, "alg": "RS256"}]})

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(jwks.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def lti_class():
    """A class of one (`s`), its hub started with the LMS's settings; (hub URL, s, the LMS's key and kid, the
    hub's log)."""
    (s,) = fresh_names("pl")
    root = Path(tempfile.mkdtemp(prefix="peft-lti-"))
    key, kid = key_pair(), uuid.uuid4().hex
    with lms_keys(key.public_key(), kid) as jwks, class_machine([s], root):
        port = hub._free_port()
        settings = root / "lti.json"
        settings.write_text(
            json.dumps(
                {
                    "issuer": ISSUER,
                    "client_id": CLIENT,
                    "authorize_url": f"{ISSUER}/api/lti/authorize_redirect",
                    "jwks_endpoint": jwks,
                    "public_url": f"http://127.0.0.1:{port}",
                    "deployment_id": DEPLOYMENT,
                    "context_id": COURSE,
                }
            )
        )
        hub.prepare(root, [s], port=port, lti=settings)
        cmd, env = hub.hub_command(root)
        log = (root / "hub.log").open("w")
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_hub(url, proc, root / "hub.log", 120)
            yield url, s, key, kid, root / "hub.log"
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
            shutil.rmtree(root, ignore_errors=True)


def id_token(key, kid: str, nonce: str, username: str, url: str, course: str = COURSE) -> str:
    """What the LMS signs for a learner's launch of the tool (the claims LTI 1.3 requires)."""
    import jwt

    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
        "nonce": nonce,
        f"{CLAIM}version": "1.3.0",
        f"{CLAIM}message_type": "LtiResourceLinkRequest",
        f"{CLAIM}deployment_id": DEPLOYMENT,
        f"{CLAIM}target_link_uri": f"{url}/hub",
        f"{CLAIM}resource_link": {"id": "peft-course-lab-00"},
        f"{CLAIM}roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
        f"{CLAIM}context": {"id": course, "label": course.upper()},
        f"{CLAIM}custom": {"username": username},
    }
    if not username:  # the LMS's tool settings give no username field: the token has only its opaque sub
        del claims[f"{CLAIM}custom"]
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def launch(url: str, sign, username: str, browser=None):
    """A launch as a browser makes it: the LMS starts the hub's login, the hub sends the browser to the LMS
    with a nonce and state, the LMS posts back its signed id_token; `sign(nonce, username)` plays the LMS.
    (the browser, the callback's reply, the form the browser posted to it and its cookies then)."""
    import requests

    browser = browser or requests.Session()
    start = browser.post(
        f"{url}/hub/lti13/oauth_login",
        data={
            "iss": ISSUER,
            "login_hint": username or "lms-user-1",
            "target_link_uri": f"{url}/hub",
            "client_id": CLIENT,
        },
        allow_redirects=False,
    )
    assert start.status_code == 302, start.text[-500:]
    asked = {k: v[0] for k, v in parse_qs(urlparse(start.headers["Location"]).query).items()}
    assert asked["client_id"] == CLIENT and asked["response_mode"] == "form_post"
    posted = {"id_token": sign(asked["nonce"], username), "state": asked["state"]}
    posted["cookies"] = list(browser.cookies)  # what the browser sent with it (the state and nonce cookies)
    reply = browser.post(
        asked["redirect_uri"], data={k: posted[k] for k in ("id_token", "state")}, allow_redirects=False
    )
    return browser, reply, posted


def logged_in_as(browser, url: str) -> str | None:
    """The hub's user of this browser's session, or None."""
    home = browser.get(f"{url}/hub/api/user", headers={"Referer": f"{url}/hub/home"}, allow_redirects=False)
    return home.json()["name"] if home.status_code == 200 else None


def test_a_signed_launch_logs_the_student_into_their_own_account(lti_class):
    url, s, key, kid, _ = lti_class
    browser, reply, _ = launch(url, lambda nonce, name: id_token(key, kid, nonce, name, url), s)
    assert reply.status_code == 302, reply.text[-500:]
    assert logged_in_as(browser, url) == s


def test_launches_the_lms_did_not_sign_for_this_class_log_nobody_in(lti_class):
    url, s, key, kid, _ = lti_class
    signed = lambda nonce, name: id_token(key, kid, nonce, name, url)  # noqa: E731 - the LMS's signature
    stranger = key_pair()
    forged, reply, _ = launch(url, lambda nonce, name: id_token(stranger, kid, nonce, name, url), s)
    assert reply.status_code in (400, 401) and logged_in_as(forged, url) is None  # another key, the LMS's kid
    for name in (fresh_names("nx")[0], "nobody", "root"):  # not enrolled: no account, a machine's, root
        browser, reply, _ = launch(url, signed, name)
        assert reply.status_code == 403 and logged_in_as(browser, url) is None, name
    # a name that is the student's only once case-folded (JupyterHub lower-cases names before its checks)
    browser, reply, _ = launch(url, signed, s.upper())
    assert reply.status_code == 400 and logged_in_as(browser, url) is None
    # the student's own login, launching the tool from another course of the LMS
    browser, reply, _ = launch(url, lambda nonce, n: id_token(key, kid, nonce, n, url, course="other-101"), s)
    assert reply.status_code == 403 and logged_in_as(browser, url) is None
    # a launch without the claim that names the account: never the LMS's own id for the learner instead
    browser, reply, _ = launch(url, lambda nonce, n: id_token(key, kid, nonce, "", url), s)
    assert reply.status_code == 400 and "username" in reply.text and logged_in_as(browser, url) is None


def test_a_launch_is_used_once(lti_class):
    url, s, key, kid, log = lti_class
    browser, reply, seen = launch(url, lambda nonce, name: id_token(key, kid, nonce, name, url), s)
    assert reply.status_code == 302
    # posted again with the cookies it came with (a proxy's log, a shared computer's history)
    again = requests_session(seen["cookies"])
    form = {k: seen[k] for k in ("id_token", "state")}
    reply = again.post(f"{url}/hub/lti13/oauth_callback", data=form, allow_redirects=False)
    assert reply.status_code == 400 and logged_in_as(again, url) is None
    assert "this launch was used already" in log.read_text()
    # posted from another browser, after a login of its own (another nonce)
    replayed, reply, _ = launch(url, lambda nonce, name: seen["id_token"], s)
    assert reply.status_code == 400 and logged_in_as(replayed, url) is None


def test_the_hubs_own_login_form_logs_nobody_in(lti_class):
    """JupyterHub's /hub/login posts its form's fields to the authenticator as if they were a verified token."""
    url, s, _, _, log = lti_class
    browser = requests_session()
    browser.get(f"{url}/hub/login")  # its _xsrf cookie, as a browser has it
    fields = {"username": s, "email": s, "sub": s, "custom_username": s, "password": "x"}
    reply = browser.post(
        f"{url}/hub/login",
        data={"_xsrf": browser.cookies.get("_xsrf", ""), **fields},
        allow_redirects=False,
    )
    assert reply.status_code == 403 and logged_in_as(browser, url) is None
    assert "403 POST /hub/login (127.0.0.1): log in from the course's page in the LMS" in log.read_text()


def requests_session(cookies=None):
    """A browser: a fresh session, or one holding a copy of `cookies`."""
    import requests

    session = requests.Session()
    for cookie in cookies or []:
        session.cookies.set_cookie(cookie)
    return session
