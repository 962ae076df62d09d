"""Simulated machines: run hardware-dependent code as if on a Colab T4, an A100, an H100 or a plain CPU.

`simulated(machine)` patches what torch answers about the hardware (`torch.cuda.is_available`,
`is_bf16_supported`, `get_device_capability`, `get_device_name`, `get_device_properties`,
`device_count`, `current_device`, `torch.accelerator.*`, `torch.backends.mps.is_available`) for the
length of a `with` block, consistently and as a real machine of that kind answers: on a T4,
`torch.cuda.is_bf16_supported()` says True (bf16 can be *emulated* there) and only
`is_bf16_supported(including_emulation=False)` says False. Nothing runs on a GPU; only the answers
change. Lab 00 uses it to try a dtype chooser on machines the learner does not have, its hidden checks to
grade it, and tests/learner/test_dtype_rule.py to run the labs' own dtype choices (labutils.compute_dtype and
friends) on a T4 and an A100.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from unittest import mock


@dataclass(frozen=True)
class Machine:
    label: str  # how a message names it, e.g. "a Colab T4"
    device_name: str | None  # what torch.cuda.get_device_name() answers; None: no CUDA GPU
    capability: tuple[int, int] | None = None
    memory_gib: int = 0

    @property
    def cuda(self) -> bool:
        return self.device_name is not None

    @property
    def bf16_native(self) -> bool:
        return self.cuda and self.capability >= (8, 0)

    @property
    def recommended(self):
        """The compute dtype the course's doctor recommends on this machine (a torch.dtype)."""
        from labutils.doctor import recommended_compute_dtype

        return recommended_compute_dtype(self.cuda, self.bf16_native)

    @property
    def training(self):
        """The dtype the course trains in on this machine (labutils.training_dtype): float32 on a CPU."""
        import torch

        from labutils.facts import training_dtype_name

        return getattr(torch, training_dtype_name(self.cuda, self.bf16_native))

    @property
    def why(self) -> str:
        """Why `recommended` is right here, in a few words."""
        if not self.cuda:
            return "no CUDA: the course uses bf16 on the CPU"
        cc = f"capability {self.capability[0]}.{self.capability[1]}"
        return f"{cc}: {'native' if self.bf16_native else 'no native'} bf16"


MACHINES = {
    "colab_t4": Machine("a Colab T4", "Tesla T4", (7, 5), 15),
    "v100": Machine("a V100", "Tesla V100-SXM2-16GB", (7, 0), 16),
    "a100": Machine("an A100", "NVIDIA A100-SXM4-40GB", (8, 0), 40),
    "l4": Machine("an L4", "NVIDIA L4", (8, 9), 22),
    "h100": Machine("an H100", "NVIDIA H100 80GB HBM3", (9, 0), 80),
    "cpu": Machine("a CPU-only machine", None),
}
GPUS = tuple(m for m in MACHINES.values() if m.cuda)


def _no_gpu(*args, **kwargs):
    raise RuntimeError("no CUDA GPU (simulated): ask torch.cuda.is_available() first")


def _answers(machine: Machine) -> dict[str, Callable[..., Any]]:
    """The torch.cuda functions of `machine`, by name."""
    if not machine.cuda:
        return {
            "is_available": lambda: False,
            "device_count": lambda: 0,
            "is_bf16_supported": lambda including_emulation=True: False,
            "current_device": _no_gpu,
            "get_device_name": _no_gpu,
            "get_device_capability": _no_gpu,
            "get_device_properties": _no_gpu,
        }
    major, minor = machine.capability
    properties = SimpleNamespace(
        name=machine.device_name,
        major=major,
        minor=minor,
        total_memory=machine.memory_gib * 2**30,
        multi_processor_count=40,
    )
    return {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        # bf16 is native from compute capability 8.0; below it torch (>= 2.3) still answers True
        # unless asked about native support only, because it can emulate bf16 there.
        "is_bf16_supported": lambda including_emulation=True: (
            machine.bf16_native or bool(including_emulation)
        ),
        "current_device": lambda: 0,
        "get_device_name": lambda device=None: machine.device_name,
        "get_device_capability": lambda device=None: (major, minor),
        "get_device_properties": lambda device=None: properties,
    }


@contextlib.contextmanager
def simulated(machine: Machine, namespace: dict | None = None) -> Iterator[Machine]:
    """Within the block torch answers as `machine` would.

    `namespace` (optional): a module or notebook namespace whose names bound directly to these torch
    functions (`from torch.cuda import is_available`) are swapped for the simulated answers too.
    """
    import torch

    answers = _answers(machine)
    accelerator = {
        "is_available": answers["is_available"],
        "device_count": answers["device_count"],
        "current_accelerator": lambda check_available=False: torch.device("cuda") if machine.cuda else None,
    }
    targets = [(torch.cuda, answers), (torch.backends.mps, {"is_available": lambda: False})]
    if hasattr(torch, "accelerator"):
        targets.append((torch.accelerator, accelerator))
    with contextlib.ExitStack() as stack:
        swapped = {}
        for module, functions in targets:
            for name, fake in functions.items():
                if hasattr(module, name):
                    swapped[id(getattr(module, name))] = fake
                    stack.enter_context(mock.patch.object(module, name, fake))
        if namespace is not None:
            aliased = {k: v for k, v in list(namespace.items()) if callable(v) and id(v) in swapped}
            namespace.update({k: swapped[id(v)] for k, v in aliased.items()})
            stack.callback(namespace.update, aliased)  # only those names come back, nothing else
        yield machine


def dtype_of(value):
    """A torch.dtype from a dtype or its name ("bfloat16", "torch.float16"); None if it is neither."""
    import torch

    if isinstance(value, str):
        value = getattr(torch, value.strip().removeprefix("torch."), None)
    return value if isinstance(value, torch.dtype) else None


def dtype_name(value) -> str:
    dtype = dtype_of(value)
    return str(dtype).removeprefix("torch.") if dtype is not None else repr(value)


def try_on_machines(choose: Callable[[], Any], machines=None, namespace: dict | None = None) -> list[dict]:
    """Call `choose()` on each simulated machine: rows of machine, answer (or error) and the right dtype."""
    rows = []
    for machine in machines or MACHINES.values():
        row = {"machine": machine, "answer": None, "error": None}
        with simulated(machine, namespace):
            try:
                row["answer"] = choose()
            except Exception as err:  # the finding: report it per machine
                row["error"] = f"{type(err).__name__}: {err}"
        row["right"] = machine.recommended  # after the call: no frame `choose` can read holds the answer
        row["ok"] = row["error"] is None and dtype_of(row["answer"]) == row["right"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """The rows of `try_on_machines` as a small text table."""
    lines = [f"{'machine':<22} {'GPU':<22} {'cc':<4} {'answer':<12} {'right':<9}"]
    for row in rows:
        m = row["machine"]
        cc = f"{m.capability[0]}.{m.capability[1]}" if m.cuda else "-"
        answer = "error" if row["error"] else dtype_name(row["answer"])
        mark = "ok" if row["ok"] else "WRONG"
        lines.append(
            f"{m.label:<22} {m.device_name or '-':<22} {cc:<4} {answer:<12} {dtype_name(row['right']):<9} {mark}"
        )
    return "\n".join(lines)
