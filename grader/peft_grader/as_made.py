"""Files as they were made: the lab's output folders as they stood when each of their checks ran.

The trusted executor (peft_grader.sandbox_execute) calls `checkpoint` right after each test cell whose check
reads the lab's folders (a "files." entry of the lab's OUTSIDE). A file is kept as it was the first time a
check saw it, made by the cell that wrote it: every later check's view holds that version, so a file rewritten
(or deleted) after a check ran cannot change a later verdict either, and the change is reported as tampering,
held for review. New files join the views from the checkpoint that first sees them. The outside verification
judges each check on its own view (`materialize`).

The store lives in the scratch course, outside anything the learner's kernel can see or write.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

INDEX = "views.json"


def _files(notebook_dir: Path, folders: list[Path]) -> dict[str, Path]:
    """Every regular file under the lab's folders (relative to the notebook's folder), not following links."""
    found = {}
    for folder in folders:
        root = notebook_dir / folder
        if root.is_symlink() or not root.is_dir():
            continue
        for dirpath, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not (Path(dirpath) / d).is_symlink()]
            for name in files:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    found[path.relative_to(notebook_dir).as_posix()] = path
    return found


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


class FilesAsMade:
    def __init__(self, store: Path, notebook_dir: Path, folders: list[Path]) -> None:
        self.store, self.notebook_dir = Path(store), Path(notebook_dir)
        # the top folders only: OUTPUT_DIR holds ADAPTER_DIR, which must not be walked twice
        self.folders = [f for f in folders if not any(f != o and f.is_relative_to(o) for o in folders)]
        self.views: dict[str, dict[str, str]] = {}  # grade id -> {relative path: sha256}
        self.first: dict[
            str, tuple[str, str]
        ] = {}  # relative path -> (sha256 as first seen, the check that saw it)
        self.changes: list[str] = []
        self.store.mkdir(parents=True, exist_ok=True)

    def checkpoint(self, grade_id: str) -> None:
        """The view of the check `grade_id`: every file as first seen (stored now where it is new), and what
        changed since a check saw it."""
        current = _files(self.notebook_dir, self.folders)
        for relative, path in current.items():
            try:
                digest = _digest(path)
            except OSError:
                continue  # gone or unreadable while it was read: not seen
            if relative not in self.first:
                blob = self.store / "blobs" / digest
                if not blob.exists():
                    blob.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, blob)
                self.first[relative] = (digest, grade_id)
            elif self.first[relative][0] != digest:
                self._note(f"{relative} rewritten after {self.first[relative][1]} checked it")
        for relative, (_, checked) in self.first.items():
            if relative not in current:
                self._note(f"{relative} deleted after {checked} checked it")
        self.views[grade_id] = {relative: digest for relative, (digest, _) in self.first.items()}
        (self.store / INDEX).write_text(json.dumps(self.views, indent=1))

    def _note(self, change: str) -> None:
        if change not in self.changes:
            self.changes.append(change)

    def changed_since(self) -> list[str]:
        """Files rewritten or deleted after a check read them, up to now (the end of the notebook)."""
        if self.views:
            current = _files(self.notebook_dir, self.folders)
            for relative, (digest, checked) in self.first.items():
                if relative not in current:
                    self._note(f"{relative} deleted after {checked} checked it")
                else:
                    try:
                        if _digest(current[relative]) != digest:
                            self._note(f"{relative} rewritten after {checked} checked it")
                    except OSError:
                        self._note(f"{relative} unreadable after {checked} checked it")
        return list(self.changes)


def materialize(store: Path, target: Path) -> dict[str, Path]:
    """One folder per checked test cell under `target`, holding the lab's files as that check saw them (hard
    links into the store where the file system allows, else copies): grade id -> folder."""
    index = Path(store) / INDEX
    if not index.is_file():
        return {}
    folders = {}
    for grade_id, view in json.loads(index.read_text()).items():
        root = Path(target) / grade_id
        for relative, digest in view.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(Path(store) / "blobs" / digest, path)
            except OSError:
                shutil.copyfile(Path(store) / "blobs" / digest, path)
        root.mkdir(parents=True, exist_ok=True)
        folders[grade_id] = root
    return folders
