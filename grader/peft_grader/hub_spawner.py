"""Each student's JupyterLab as their own Unix account, inside a memory cgroup the student cannot lift.

JupyterHub's LocalProcessSpawner switches to the student's account in the child it forks, but does not
enforce `mem_limit` (its own documentation says so). `ClassSpawner` puts that child into a memory cgroup of
the student's own before it drops root, so the server and every kernel it starts share one limit; the
cgroup's files belong to root, so nothing the student runs can raise it or leave it. cgroup v2 where the
machine has it, v1 otherwise; on a machine with neither writable, `memory_cgroup` returns None and the hub
says at its start that no limit is enforced (grader/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from jupyterhub.traitlets import ByteSpecification

CGROUPS = Path("/sys/fs/cgroup")
PARENT = "peft-hub"


def cgroup_version() -> int | None:
    """2 or 1 where this process may make memory cgroups, else None."""
    controllers = CGROUPS / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split() and os.access(CGROUPS, os.W_OK):
        return 2
    v1 = CGROUPS / "memory"
    if (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return 1
    return None


def cgroup_dir(name: str, version: int) -> Path:
    return CGROUPS / PARENT / name if version == 2 else CGROUPS / "memory" / PARENT / name


def memory_cgroup(name: str, limit: int | str) -> Path | None:
    """A memory cgroup for `name` limited to `limit` bytes (swap included where the kernel counts it), made
    or updated; None where this machine lets no one make one."""
    version, limit = cgroup_version(), ByteSpecification().validate(None, limit)  # JupyterHub's "4G" rule
    if version is None:
        return None
    if version == 2:
        parent = CGROUPS / PARENT
        parent.mkdir(exist_ok=True)
        (CGROUPS / "cgroup.subtree_control").write_text("+memory")
        (parent / "cgroup.subtree_control").write_text("+memory")
        group = cgroup_dir(name, 2)
        group.mkdir(exist_ok=True)
        (group / "memory.max").write_text(str(limit))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        return group
    group = cgroup_dir(name, 1)
    group.mkdir(parents=True, exist_ok=True)
    memsw = group / "memory.memsw.limit_in_bytes"  # memory and swap: the limit cannot be swapped around
    if memsw.exists():
        memsw.write_text("-1")  # memory + swap must never be under memory alone, also while lowering both
    (group / "memory.limit_in_bytes").write_text(str(limit))
    if memsw.exists():
        memsw.write_text(str(limit))
    return group


def join(group: Path, pid: int) -> None:
    (group / "cgroup.procs").write_text(str(pid))


class ClassSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose child joins the student's memory cgroup (as root) before it becomes the
    student. A cgroup that cannot be joined stops the spawn: no server runs without its limit."""

    def make_preexec_fn(self, name):
        become_student = super().make_preexec_fn(name)
        group = memory_cgroup(name, self.mem_limit) if self.mem_limit else None

        def preexec():
            if group is not None:
                join(group, os.getpid())
            become_student()

        return preexec
