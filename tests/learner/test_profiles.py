"""Profiles: tiny (local built models) by default, hub ids on request, and readable errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from labutils import cli, models, profiles
from labutils.errors import CourseError
from labutils.profiles import PROFILE_VAR, course_model, current_profile, role_override_var


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # Each test states the profile and overrides it needs, whatever the developer's shell exports.
    monkeypatch.delenv(PROFILE_VAR, raising=False)
    for role in profiles.ROLES:
        monkeypatch.delenv(role_override_var(role), raising=False)


@pytest.fixture
def no_build(monkeypatch):
    """Fail loudly if anything tries to build a tiny model (hub resolution must not)."""

    def refuse(role):
        raise AssertionError(f"built tiny model {role!r} in the hub profile")

    monkeypatch.setattr(models, "ensure_tiny_model", refuse)


def test_roles_and_recipes_agree():
    assert set(profiles.ROLES) == set(models.RECIPES) == set(profiles.HUB_MODELS)


def test_default_profile_is_tiny_and_resolves_to_a_local_model_dir():
    assert current_profile() == "tiny"
    path = Path(course_model("causal_lm"))
    assert path == models.model_dir("causal_lm")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert course_model() == str(path)  # causal_lm is the default role


@pytest.mark.parametrize("value", ["hub", "HUB", " Hub\n", "\thub  "])
def test_hub_profile_is_case_and_whitespace_tolerant(monkeypatch, value):
    monkeypatch.setenv(PROFILE_VAR, value)
    assert current_profile() == "hub"


@pytest.mark.parametrize("value", ["", "   ", "TINY", " tiny "])
def test_empty_or_padded_tiny_value_means_tiny(monkeypatch, value):
    monkeypatch.setenv(PROFILE_VAR, value)
    assert current_profile() == "tiny"


def test_hub_profile_returns_hub_ids_without_building(monkeypatch, no_build):
    monkeypatch.setenv(PROFILE_VAR, "hub")
    for role, model_id in profiles.HUB_MODELS.items():
        assert course_model(role) == model_id
    assert course_model() == "HuggingFaceTB/SmolLM2-360M"


def test_hub_override_replaces_only_its_role(monkeypatch, no_build):
    monkeypatch.setenv(PROFILE_VAR, "hub")
    monkeypatch.setenv("PEFT_COURSE_MODEL_CAUSAL_LM", "meta-llama/Llama-3.1-8B")
    assert role_override_var("causal_lm") == "PEFT_COURSE_MODEL_CAUSAL_LM"
    assert course_model("causal_lm") == "meta-llama/Llama-3.1-8B"
    assert course_model("gpt2") == profiles.HUB_MODELS["gpt2"]


def test_empty_override_falls_back_to_the_default_id(monkeypatch, no_build):
    monkeypatch.setenv(PROFILE_VAR, "hub")
    monkeypatch.setenv("PEFT_COURSE_MODEL_CAUSAL_LM", "")
    assert course_model("causal_lm") == profiles.HUB_MODELS["causal_lm"]


def test_override_is_ignored_in_the_tiny_profile(monkeypatch):
    monkeypatch.setenv("PEFT_COURSE_MODEL_CAUSAL_LM", "meta-llama/Llama-3.1-8B")
    assert course_model("causal_lm") == str(models.model_dir("causal_lm"))


@pytest.mark.parametrize("value", ["gpu", "tinyy", "hub,tiny"])
def test_unknown_profile_names_the_variable_and_valid_profiles(monkeypatch, value):
    monkeypatch.setenv(PROFILE_VAR, value)
    with pytest.raises(CourseError) as info:
        current_profile()
    message = str(info.value)
    assert PROFILE_VAR in message and repr(value) in message
    assert "tiny" in message and "hub" in message
    with pytest.raises(CourseError):
        course_model("causal_lm")  # resolving a model reports the same problem


@pytest.mark.parametrize("profile", ["tiny", "hub"])
@pytest.mark.parametrize("role", ["nosuchrole", "CAUSAL_LM", "llama"])
def test_unknown_role_lists_the_roles(monkeypatch, no_build, profile, role):
    monkeypatch.setenv(PROFILE_VAR, profile)
    with pytest.raises(CourseError) as info:
        course_model(role)
    message = str(info.value)
    assert repr(role) in message
    assert all(r in message for r in profiles.ROLES)


def test_cli_unknown_role_is_one_error_line_and_exit_code_2(capsys):
    assert cli.main(["build-models", "nosuchrole"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert "'nosuchrole'" in errors[0] and "causal_lm" in errors[0] and "roberta" in errors[0]
