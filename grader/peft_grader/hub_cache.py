"""The hub profile rehearsed offline: a Hugging Face cache seeded under the hub ids with the course's tiny models.

The workshop path (Colab, `PEFT_COURSE_PROFILE=hub`) loads real hub ids; here no hub can be reached, so the
Colab rehearsal (tests/end_to_end/test_colab_rehearsal.py) and bench/hub_memory.py store the tiny models under
those ids and run with HF_HUB_OFFLINE=1. The instructor's side: no lab imports it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# A kernel like Colab's, as an IPython start-up file: Colab's module is loaded before the first cell (the stand-in
# on PYTHONPATH; the labs' set-up cell looks for it in sys.modules), and nbgrader and JupyterLab, which the set-up
# cell does not install, cannot be imported.
COLAB_KERNEL_STARTUP = """
import importlib.abc
import sys


class _NotOnColab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nbgrader", "jupyterlab"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotOnColab())
import google.colab  # noqa: E402,F401
"""


def seed_hub_cache(
    hub_cache: Path, roles: list[str] | None = None, sources: dict[str, Path] | None = None
) -> dict[str, str]:
    """Store each role's tiny model in a Hugging Face cache under the role's hub id, so the hub profile
    runs offline (HF_HUB_CACHE=hub_cache, HF_HUB_OFFLINE=1): a rehearsal of the workshop path.

    Written in the cache's own layout by huggingface_hub's own functions (blobs named by content, snapshot
    pointers, refs/main), as a download would leave it. `sources` stores other checkpoints of some roles
    (bench/hub_memory.py: the same models in float32). Returns {hub id: commit}.
    """
    import hashlib

    from huggingface_hub import file_download

    from labutils.models import ensure_tiny_model
    from labutils.profiles import ROLES, hub_model_id

    seeded = {}
    sources = sources or {}
    for role in roles or list(sources) or list(ROLES):
        repo_id = hub_model_id(role)
        if repo_id in seeded:  # roles that share a hub id (causal_lm, world_lm): the first role's model, as a
            continue  # download would give one model (so the world's base never stands in for SmolLM2)
        source = sources.get(role) or ensure_tiny_model(role)
        storage = Path(hub_cache) / file_download.repo_folder_name(repo_id=repo_id, repo_type="model")
        files = sorted(p for p in source.rglob("*") if p.is_file())
        commit = hashlib.sha1(b"".join(p.read_bytes() for p in files)).hexdigest()  # a 40-hex revision
        for path in files:
            blob = storage / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            if not blob.exists():
                shutil.copyfile(path, blob)
            pointer = Path(
                file_download._get_pointer_path(str(storage), commit, str(path.relative_to(source)))
            )
            pointer.parent.mkdir(parents=True, exist_ok=True)
            file_download._create_symlink(str(blob), str(pointer))
        file_download._cache_commit_hash_for_specific_revision(str(storage), "main", commit)
        seeded[repo_id] = commit
    return seeded
