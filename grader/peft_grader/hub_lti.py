"""A class hub's students launched from the university's LMS with LTI 1.3 (`labutils hub start --lti FILE`).

The LMS (Canvas, Moodle, Blackboard...) is the identity provider: it signs each launch (an OpenID Connect
id_token, RS256, checked against the LMS's published keys) and jupyterhub-ltiauthenticator's LTI13Authenticator
verifies it, with the nonce and state it issued. What the course adds:
- a launch is the only way in: JupyterHub's own login form (`/hub/login`), which would hand its fields to the
  authenticator as if they were a verified token, is refused;
- a launch logs in only a student of this class, an account `labutils hub add` made in the students' group,
  whose name the LMS sends exactly (no case or Unicode folding), from the deployment and course the instructor
  names; so an LMS user the instructor did not enrol gets no server;
- each launch is used once (its nonce is remembered until the token is too old to be accepted anyway).

FILE is JSON with the values the LMS shows when the tool is registered:
  issuer         the platform's issuer id, e.g. "https://canvas.instructure.com"
  client_id      the tool's client id (a string, or a list of them)
  authorize_url  the platform's OIDC authorization end-point
  jwks_endpoint  the platform's public keys (JSON Web Key Set)
  public_url     the hub's address as the LMS reaches it, e.g. "https://hub.example.edu" (the hub's cookies are
                 then Secure and SameSite=None, which the LMS's cross-site form post needs)
  username_key   (optional) the claim that holds the student's account name; default "custom_username": a
                 custom field set in the LMS's tool settings to the learner's login (Canvas and Moodle:
                 username=$User.username), "custom_" meaning a key of the LTI custom claim
  deployment_id, context_id  (optional) launches only from this deployment of the tool / this course (a string
                 or a list): a student's login launching the tool from another course is refused
Every URL is https, except on this machine's loopback address (a local test).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlparse

from ltiauthenticator.lti13.auth import LTI13Authenticator
from ltiauthenticator.lti13.constants import LTI13_CUSTOM_CLAIM
from ltiauthenticator.lti13.error import LoginError
from ltiauthenticator.lti13.handlers import LTI13CallbackHandler
from tornado import web
from traitlets import Set, Unicode

from labutils.errors import CourseError
from peft_grader.hub_accounts import NAME, is_student

REQUIRED = ("issuer", "client_id", "authorize_url", "jwks_endpoint", "public_url")
OPTIONAL = ("username_key", "deployment_id", "context_id")
URLS = ("issuer", "authorize_url", "jwks_endpoint", "public_url")
DEFAULT_USERNAME_KEY = "custom_username"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
# A used launch's nonce is remembered this long: LTI13LaunchValidator.max_age, past which its token is refused anyway
LAUNCH_MAX_AGE = 600


def _strings(value) -> list[str] | None:
    values = [value] if isinstance(value, str) else value
    if isinstance(values, list) and values and all(isinstance(v, str) and v for v in values):
        return values
    return None


def read_settings(path: Path) -> dict:
    """The LTI settings of FILE, checked; a readable error naming what is wrong."""
    path = Path(path)
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        raise CourseError(
            f"--lti {path}: no such file. Fix: give the JSON file of the LMS's settings."
        ) from None
    except json.JSONDecodeError as err:
        raise CourseError(f"--lti {path} is not JSON ({err.msg}, line {err.lineno}).") from None
    if not isinstance(found, dict):
        raise CourseError(f"--lti {path}: give a JSON object with {', '.join(REQUIRED)}.")
    settings = {"username_key": DEFAULT_USERNAME_KEY, **found}
    if missing := [key for key in REQUIRED if not settings.get(key)]:
        raise CourseError(
            f"--lti {path} lacks {', '.join(missing)}: the LMS shows them when the tool is registered "
            "(public_url: the hub's https address)."
        )
    if unknown := sorted(set(settings) - {*REQUIRED, *OPTIONAL}):
        raise CourseError(
            f"--lti {path}: unknown keys {', '.join(unknown)} (known: {', '.join(REQUIRED + OPTIONAL)})."
        )
    for key in URLS:
        url = urlparse(str(settings[key]))
        secure = url.scheme == "https" or url.scheme == "http" and url.hostname in LOOPBACK
        if not url.netloc or not secure:
            raise CourseError(
                f"--lti {path}: {key} {settings[key]!r} is not an https URL (plain http would let anyone on the "
                "way swap the LMS's keys or read the hub's cookies; it is allowed on this machine's loopback only)."
            )
    for key in ("client_id", "deployment_id", "context_id"):
        if key in settings:
            if not (values := _strings(settings[key])):
                raise CourseError(f"--lti {path}: {key} is a string, or a list of strings.")
            settings[key] = values
    if not isinstance(settings["username_key"], str) or not settings["username_key"]:
        raise CourseError(
            f"--lti {path}: username_key is the name of a claim, e.g. {DEFAULT_USERNAME_KEY!r}."
        )
    return settings


def configure(c, settings: dict) -> None:
    """jupyterhub_config.py's part: the class's LTI 1.3 authenticator with the instructor's settings."""
    c.JupyterHub.authenticator_class = "peft_grader.hub_lti.ClassLTIAuthenticator"
    c.LTI13Authenticator.issuer = settings["issuer"]
    c.LTI13Authenticator.client_id = set(settings["client_id"])
    c.LTI13Authenticator.authorize_url = settings["authorize_url"]
    c.LTI13Authenticator.jwks_endpoint = settings["jwks_endpoint"]
    c.LTI13Authenticator.username_key = settings["username_key"]
    c.ClassLTIAuthenticator.deployment_ids = set(settings.get("deployment_id") or [])
    c.ClassLTIAuthenticator.context_ids = set(settings.get("context_id") or [])
    c.JupyterHub.public_url = settings["public_url"]
    if urlparse(settings["public_url"]).scheme == "https":
        # the LMS posts the launch from its own site: the state and nonce cookies must come back with it
        c.JupyterHub.tornado_settings = {"cookie_options": {"SameSite": "None", "Secure": True}}


class ClassLTIAuthenticator(LTI13Authenticator):
    """LTI 1.3 launches, for the students of this class only: an account in the students' group."""

    any_allow_config = True  # check_allowed below is the allow rule (JupyterHub's startup warning off)
    deployment_ids = Set(Unicode(), help="launches only from these deployments of the tool").tag(config=True)
    context_ids = Set(Unicode(), help="launches only from these courses (the LTI context id)").tag(
        config=True
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._used: dict[
            str, float
        ] = {}  # the nonces of the launches that logged in, until when to refuse them

    async def authenticate(self, handler, data=None):
        # Only the launch's callback has verified `data` (the id_token). JupyterHub's login form posts its raw
        # fields here too (LoginHandler.post): with username_key "email", a form field "email" would log in.
        if not isinstance(handler, LTI13CallbackHandler):
            raise web.HTTPError(403, "log in from the course's page in the LMS (an LTI 1.3 launch)")
        nonce, now = data.get("nonce"), time.time()
        self._used = {n: until for n, until in self._used.items() if until > now}
        # the same launch posted again with the cookies it came with (a proxy's log, a shared computer)
        if nonce in self._used:
            raise web.HTTPError(400, "this launch was used already: launch the tool again from the LMS")
        self._used[nonce] = now + LAUNCH_MAX_AGE
        return await super().authenticate(handler, data)

    def get_username(self, token: dict) -> str:
        """The account name in the claim the instructor named, as the LMS sent it. Unlike LTI13Authenticator,
        never the LMS's opaque `sub` when that claim is missing (an id the LMS chose must not land on someone's
        account), and never a name that only case or Unicode folding would turn into an account's."""
        key = self.username_key
        claims = token.get(LTI13_CUSTOM_CLAIM, {}) if key.startswith("custom_") else token
        name = claims.get(key.removeprefix("custom_")) if isinstance(claims, dict) else None
        if not isinstance(name, str) or not name:
            raise LoginError(
                f"the launch names no account ({key} is missing): set it in the LMS's tool settings "
                "(a custom field username=$User.username, for the default username_key)"
            )
        if not NAME.fullmatch(name):
            raise LoginError(f"the launch's {key} {name[:40]!r} is not the name of an account of this class")
        return name

    def check_allowed(self, username, authentication=None):
        claims = (authentication or {}).get("auth_state") or {}
        context = claims.get(f"{CLAIM}context") or {}
        return (
            bool(NAME.fullmatch(username))
            and is_student(username)
            and (not self.deployment_ids or claims.get(f"{CLAIM}deployment_id") in self.deployment_ids)
            and (not self.context_ids or isinstance(context, dict) and context.get("id") in self.context_ids)
        )
