"""A class hub's students launched from the university's LMS with LTI 1.3 (`labutils hub start --lti FILE`).

The LMS (Canvas, Moodle, Blackboard...) is the identity provider: it signs each launch (an OpenID Connect
id_token, RS256, checked against the LMS's published keys) and jupyterhub-ltiauthenticator's LTI13Authenticator
verifies it, the nonce and state it issued included. What the course adds: a launch logs in only a student
of this class, an account `labutils hub add` made in the students' group, so an LMS user the instructor did
not enrol gets no server and the account names stay the instructor's. Passwords are not used then.

FILE is JSON with the values the LMS shows when the tool is registered:
  issuer         the platform's issuer id, e.g. "https://canvas.instructure.com"
  client_id      the tool's client id (a string, or a list of them)
  authorize_url  the platform's OIDC authorization end-point
  jwks_endpoint  the platform's public keys (JSON Web Key Set)
  username_key   (optional) the claim that holds the student's account name; default "custom_username": a
                 custom field set in the LMS's tool settings to the learner's login (Canvas and Moodle:
                 username=$User.username), "custom_" meaning a key of the LTI custom claim.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

from ltiauthenticator.lti13.auth import LTI13Authenticator
from ltiauthenticator.lti13.constants import LTI13_CUSTOM_CLAIM
from ltiauthenticator.lti13.error import LoginError

from labutils.errors import CourseError
from peft_grader.hub_accounts import NAME, is_student

REQUIRED = ("issuer", "client_id", "authorize_url", "jwks_endpoint")
DEFAULT_USERNAME_KEY = "custom_username"


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
            f"--lti {path} lacks {', '.join(missing)}: the LMS shows them when the tool is registered."
        )
    if unknown := sorted(set(settings) - {*REQUIRED, "username_key"}):
        raise CourseError(
            f"--lti {path}: unknown keys {', '.join(unknown)} (known: {', '.join(REQUIRED)}, username_key)."
        )
    for key in ("issuer", "authorize_url", "jwks_endpoint"):
        url = urlparse(str(settings[key]))
        if url.scheme not in ("https", "http") or not url.netloc:
            raise CourseError(f"--lti {path}: {key} {settings[key]!r} is not an http(s) URL.")
    ids = settings["client_id"]
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise CourseError(f"--lti {path}: client_id is a string, or a list of strings.")
    settings["client_id"] = ids
    return settings


def configure(c, settings: dict) -> None:
    """jupyterhub_config.py's part: the class's LTI 1.3 authenticator with the instructor's settings."""
    c.JupyterHub.authenticator_class = "peft_grader.hub_lti.ClassLTIAuthenticator"
    c.LTI13Authenticator.issuer = settings["issuer"]
    c.LTI13Authenticator.client_id = set(settings["client_id"])
    c.LTI13Authenticator.authorize_url = settings["authorize_url"]
    c.LTI13Authenticator.jwks_endpoint = settings["jwks_endpoint"]
    c.LTI13Authenticator.username_key = settings["username_key"]


class ClassLTIAuthenticator(LTI13Authenticator):
    """LTI 1.3 launches, for the students of this class only: an account in the students' group."""

    any_allow_config = True  # check_allowed below is the allow rule (JupyterHub's startup warning off)

    def get_username(self, token: dict) -> str:
        """The account name in the claim the instructor named. Unlike LTI13Authenticator, never the LMS's
        opaque `sub` when that claim is missing: an id the LMS chose must not land on someone's account."""
        key = self.username_key
        claims = token.get(LTI13_CUSTOM_CLAIM, {}) if key.startswith("custom_") else token
        name = claims.get(key.removeprefix("custom_")) if isinstance(claims, dict) else None
        if not isinstance(name, str) or not name:
            raise LoginError(
                f"the launch names no account ({key} is missing): set it in the LMS's tool settings "
                "(a custom field username=$User.username, for the default username_key)"
            )
        return name

    def check_allowed(self, username, authentication=None):
        return bool(NAME.fullmatch(username)) and is_student(username)
