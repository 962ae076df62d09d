"""Files as they were made (peft_grader.as_made): each check judges the lab's files as first seen, whatever a
later cell does to them, and a change after a check is reported."""

from __future__ import annotations

from pathlib import Path

from peft_grader.as_made import FilesAsMade, materialize


def _lab(tmp_path: Path) -> tuple[Path, FilesAsMade]:
    notebook = tmp_path / "notebook"
    (notebook / "out" / "adapter").mkdir(parents=True)
    store = FilesAsMade(tmp_path / "store", notebook, [Path("out"), Path("out/adapter")])
    return notebook, store


def test_a_file_rewritten_after_its_check_is_judged_as_first_seen_and_reported(tmp_path):
    notebook, store = _lab(tmp_path)
    (notebook / "out" / "adapter" / "weights").write_text("trained")
    store.checkpoint("test_adapter_only")
    (notebook / "out" / "adapter" / "weights").write_text("another adapter")  # after the check
    (notebook / "out" / "deploy").write_text("merged")  # a new file, made by a later cell
    store.checkpoint("test_merged")
    views = materialize(tmp_path / "store", tmp_path / "views")
    assert (views["test_adapter_only"] / "out/adapter/weights").read_text() == "trained"
    assert not (views["test_adapter_only"] / "out/deploy").exists()
    assert (views["test_merged"] / "out/adapter/weights").read_text() == "trained"  # as it was made
    assert (views["test_merged"] / "out/deploy").read_text() == "merged"
    assert store.changed_since() == ["out/adapter/weights rewritten after test_adapter_only checked it"]


def test_a_file_deleted_after_its_check_stays_in_later_views_and_is_reported(tmp_path):
    notebook, store = _lab(tmp_path)
    (notebook / "out" / "adapter" / "weights").write_text("trained")
    store.checkpoint("test_adapter_only")
    (notebook / "out" / "adapter" / "weights").unlink()
    store.checkpoint("test_adapter_trained")
    views = materialize(tmp_path / "store", tmp_path / "views")
    assert (views["test_adapter_trained"] / "out/adapter/weights").read_text() == "trained"
    assert store.changed_since() == ["out/adapter/weights deleted after test_adapter_only checked it"]


def test_honest_work_changes_nothing_it_was_checked_on(tmp_path):
    notebook, store = _lab(tmp_path)
    (notebook / "out" / "adapter" / "weights").write_text("trained")
    store.checkpoint("test_adapter_only")
    (notebook / "out" / "deploy").write_text("merged")
    store.checkpoint("test_deploy_copy")
    assert store.changed_since() == []


def test_links_out_of_the_lab_folders_are_not_followed(tmp_path):
    notebook, store = _lab(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("grader's")
    (notebook / "out" / "adapter" / "link").symlink_to(secret)
    store.checkpoint("test_adapter_only")
    views = materialize(tmp_path / "store", tmp_path / "views")
    assert not (views["test_adapter_only"] / "out/adapter/link").exists()
