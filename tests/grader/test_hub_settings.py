"""`labutils hub`'s folder and settings, and the intake of what nbgrader collects (the browser journey,
tests/end_to_end/test_hub_class.py, plays the whole class through)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from labutils.errors import CourseError
from peft_grader import hub, hub_lti, intake


def test_a_hub_folder_holds_the_exchange_the_course_and_the_students_settings(tmp_path):
    settings = hub.prepare(tmp_path / "h", ["bo", "ada"], password="a-long-password", port=8123, demo=True)
    assert settings["students"] == ["ada", "bo"] and settings["port"] == 8123
    assert oct((tmp_path / "h" / "hub.json").stat().st_mode)[-3:] == "600"  # it holds the password
    course = (tmp_path / "h" / "course" / "nbgrader_config.py").read_text()
    assert str(tmp_path / "h" / "exchange") in course and "peft-course" in course
    # the demo's nbgrader files submissions under their hub name, not the one Unix account's
    config = tmp_path / "h" / "student-config"
    env = dict(os.environ, JUPYTERHUB_USER="ada", JUPYTER_CONFIG_PATH=str(config))
    code = (
        "from nbgrader.apps import NbGrader; app = NbGrader(); app.initialize([]);"
        "print(app.config.CourseDirectory.student_id, app.config.Exchange.root)"
    )
    seen = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert seen.stdout.split() == ["ada", str(tmp_path / "h" / "exchange")], seen.stderr
    disabled = json.loads((config / "labconfig" / "page_config.json").read_text())["disabledExtensions"]
    assert "@jupyter/nbgrader:formgrader" in disabled
    # a restart keeps the class's password
    assert hub.prepare(tmp_path / "h", ["ada", "bo"], demo=True)["password"] == "a-long-password"


@pytest.mark.parametrize(
    ("students", "password", "words"),
    [
        (["Ada"], None, "lower-case"),
        (["a/b"], None, "lower-case"),
        ([], None, "--students"),
        (["ada"], "short", "8 characters"),
    ],
)
def test_bad_hub_settings_are_one_readable_message(tmp_path, students, password, words):
    with pytest.raises(CourseError, match=words):
        hub.prepare(tmp_path, students, password=password, demo=True)


def test_a_class_needs_root_and_has_no_shared_password(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(CourseError, match="a class has no shared password"):
        hub.prepare(tmp_path, ["ada"], password="a-long-password")  # refused before any account is made
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(CourseError, match="only root.*--demo"):
        hub.prepare(tmp_path, ["ada"])


def test_instructor_commands_on_a_class_folder_without_root_say_to_use_sudo(tmp_path, monkeypatch, capsys):
    from labutils.cli import main

    (tmp_path / "hub.json").write_text("{}")
    monkeypatch.setattr(
        hub.os, "access", lambda *_: False
    )  # as a non-root account meets a 0600 file of root's
    for action in ("release", "collect", "feedback"):
        assert main(["hub", action, "00_setup", "--dir", str(tmp_path)]) == 2
        assert "only root reads: run this with sudo" in capsys.readouterr().err


def test_without_the_proxy_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "HUB_FILES", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CourseError, match="make setup.*npm ci"):
        hub.proxy_command()


def test_instructor_commands_on_a_folder_that_is_no_hub_say_how_to_start_one(tmp_path, capsys):
    from labutils.cli import main

    assert main(["hub", "collect", "00_setup", "--dir", str(tmp_path)]) == 2
    assert "labutils hub start" in capsys.readouterr().err


def test_grading_reads_what_nbgrader_collected(tmp_path):
    course = tmp_path / "course"
    collected = course / "submitted" / "ada" / "00_setup"
    collected.mkdir(parents=True)
    (course / "nbgrader_config.py").write_text("")
    (collected / "00_setup.ipynb").write_text("{}")
    (tmp_path / "plain" / "bo").mkdir(parents=True)
    (tmp_path / "plain" / "bo" / "00_setup.ipynb").write_text("{}")
    assert intake.collect(course, tmp_path) == course / "submitted"
    assert intake.submission(course / "submitted", "ada", "00_setup") == collected / "00_setup.ipynb"
    assert intake.submitted_labs(course / "submitted", "ada") == {"00_setup"}
    assert (
        intake.submission(tmp_path / "plain", "bo", "00_setup")
        == tmp_path / "plain" / "bo" / "00_setup.ipynb"
    )


GOOD_LTI = {
    "issuer": "https://lms.example.edu",
    "client_id": "peft-course-tool",
    "authorize_url": "https://lms.example.edu/authorize",
    "jwks_endpoint": "https://lms.example.edu/jwks",
    "public_url": "https://hub.example.edu",
}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"jwks_endpoint": None}, "lacks jwks_endpoint"),
        ({"public_url": None}, "lacks public_url"),
        ({"issuer": "lms"}, "issuer 'lms' is not an https URL"),
        ({"jwks_endpoint": "http://lms.example.edu/jwks"}, "jwks_endpoint .* is not an https URL"),  # keys swapped on the way
        ({"public_url": "http://hub.example.edu"}, "public_url .* is not an https URL"),
        ({"client_id": [1]}, "client_id is a string"),
        ({"deployment_id": []}, "deployment_id is a string"),
        ({"username_key": ""}, "username_key is the name of a claim"),
        ({"secret": 1}, "unknown keys secret"),
        ("not json", "is not JSON"),
    ],
)  # fmt: skip
def test_bad_lti_settings_are_one_readable_message(tmp_path, change, words):
    path = tmp_path / "lti.json"
    settings = (
        {k: v for k, v in (GOOD_LTI | change).items() if v is not None}
        if isinstance(change, dict)
        else change
    )
    path.write_text(settings if isinstance(settings, str) else json.dumps(settings))
    with pytest.raises(CourseError, match=words):
        hub_lti.read_settings(path)


def test_good_lti_settings_are_read_with_their_defaults(tmp_path):
    path = tmp_path / "lti.json"
    path.write_text(
        json.dumps(GOOD_LTI | {"jwks_endpoint": "http://127.0.0.1:9/jwks", "context_id": "peft-101"})
    )
    settings = hub_lti.read_settings(path)  # plain http on this machine's loopback: a local test
    assert settings["client_id"] == ["peft-course-tool"] and settings["context_id"] == ["peft-101"]
    assert settings["username_key"] == "custom_username"


def test_an_https_hub_sends_its_cookies_across_sites_and_a_loopback_one_does_not():
    """The LMS posts each launch from its own site: the state and nonce cookies must come back with that post."""
    from traitlets.config import Config

    for public_url, cookies in [
        ("https://hub.example.edu", {"SameSite": "None", "Secure": True}),
        ("http://127.0.0.1:8000", None),
    ]:
        c = Config()
        hub_lti.configure(
            c, GOOD_LTI | {"public_url": public_url, "client_id": ["a", "b"], "username_key": "x"}
        )
        assert c.JupyterHub.authenticator_class == "peft_grader.hub_lti.ClassLTIAuthenticator"
        assert c.LTI13Authenticator.client_id == {"a", "b"} and c.JupyterHub.public_url == public_url
        if cookies:
            assert c.JupyterHub.tornado_settings["cookie_options"] == cookies
        else:
            assert "tornado_settings" not in c.JupyterHub
