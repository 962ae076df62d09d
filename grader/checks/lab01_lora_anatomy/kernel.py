"""Hidden checks for lab 01 (LoRA anatomy: W + (alpha/r)·B·A).

`count_lora_parameters(model, config)` is run on models and configs the lab never shows (other
architectures, GPT-2's Conv1D, a 4-bit NF4 load, regex targets) and compared with peft's own counter
on a wrapped copy. The wrapped course model is judged by peft's counter on the real PeftModel.
"""

from __future__ import annotations

import copy
import numbers
import re
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel

from checks import error_text, fail, need
from checks.evidence import publish
from checks.inspect_model import manifest
from checks.lab01_lora_anatomy import judges
from checks.lab01_lora_anatomy.judges import LORA_SHAPES, SHAPES_ONLY
from labutils.facts import LLAMA_ATTENTION

FN = "count_lora_parameters"


@dataclass(frozen=True)
class Case:
    role: str  # a tiny course model (labutils.models.RECIPES)
    targets: tuple[str, ...] | str  # LoraConfig.target_modules: a list of names, or one regex
    r: int
    four_bit: bool = False

    def config(self) -> LoraConfig:
        targets = self.targets if isinstance(self.targets, str) else list(self.targets)
        return LoraConfig(r=self.r, lora_alpha=2 * self.r, target_modules=targets, lora_dropout=0.0)

    def describe(self) -> str:
        kind = "the 4-bit NF4 course Llama" if self.four_bit else f"tiny {self.role}"
        targets = self.targets if isinstance(self.targets, str) else list(self.targets)
        return f"target_modules={targets!r}, r={self.r} on {kind}"


# Plain nn.Linear models: peft's matching rules (list = exact name or '.'-bounded suffix; str = fullmatch).
LINEAR_CASES = (
    Case("causal_lm", LLAMA_ATTENTION, 16),
    Case("qwen2", ("gate_proj", "up_proj", "down_proj"), 4),
    Case("mistral", r"model\.layers\.1\.self_attn\.(q|v)_proj", 8),
    Case("gpt_neox", r".*\.dense", 8),  # fullmatch: attention.dense only, not dense_h_to_4h / dense_4h_to_h
    Case("falcon", ("query_key_value", "dense"), 16),  # "dense" is not a substring match
    Case("t5", ("q", "v", "o"), 8),  # "wo" ends with "o" but not with ".o"
    Case("phi", ("q_proj", "k_proj", "v_proj", "dense"), 4),
)
# Layers whose weight does not say (in, out): GPT-2's Conv1D (in, out) and bitsandbytes' packed Params4bit.
LAYER_CASES = (
    Case("gpt2", ("c_attn", "c_proj"), 8),
    Case("gpt2", r".*\.mlp\.c_(fc|proj)", 4),
    Case("causal_lm", LLAMA_ATTENTION, 16, four_bit=True),
    Case("causal_lm", r"model\.layers\.\d+\.mlp\.(gate|up|down)_proj", 8, four_bit=True),
)


def _load(case: Case):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, BitsAndBytesConfig

    from labutils.models import ensure_tiny_model

    path = ensure_tiny_model(case.role)
    if case.four_bit:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
        return AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, device_map="auto")
    cls = AutoModelForSeq2SeqLM if case.role == "t5" else AutoModelForCausalLM
    return cls.from_pretrained(path, dtype=torch.float32)


def peft_count(model, config: LoraConfig) -> int:
    """What peft's own counter says LoRA adds: trainable parameters of a wrapped copy."""
    from peft import get_peft_model

    return get_peft_model(copy.deepcopy(model), copy.deepcopy(config)).get_nb_trainable_parameters()[0]


def _snapshot(model) -> tuple:
    """Module types, parameter shapes/dtypes/requires_grad and a cheap checksum: any change shows."""
    modules = tuple((n, type(m).__name__) for n, m in model.named_modules())
    params = tuple(
        (n, tuple(p.shape), str(p.dtype), p.requires_grad, float(p.detach().float().sum()))
        for n, p in model.named_parameters()
    )
    return modules, params


# ---- diagnosis of a wrong count: which familiar slip reproduces the learner's number -----------------


def _sizes(module) -> tuple[int, int] | None:
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return module.nx, module.nf
    if isinstance(module, torch.nn.Linear):  # bitsandbytes Linear4bit / Linear8bitLt subclass it
        return module.in_features, module.out_features
    return None


def _peft_match(name: str, targets) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


MATCH = "match a full name equal to the target or ending with '.' + target."
# slip -> (the learner's way of matching or sizing, what it gets wrong, the fix). Messages stay short:
# grading keeps the first 400 characters of a failure.
MATCH_SLIPS = {
    "suffix": (
        lambda name, t: (
            any(name.endswith(x) for x in t) if not isinstance(t, str) else re.fullmatch(t, name) is not None
        ),
        "a target matched names that merely end with it (T5's 'wo' ends with 'o').",
        MATCH,
    ),
    "regex prefix": (
        lambda name, t: re.match(t, name) is not None if isinstance(t, str) else _peft_match(name, t),
        "a string target matched only the start of a name (re.match / re.search).",
        "a string target must re.fullmatch the full module name.",
    ),
    "substring": (
        lambda name, t: any(x in name for x in t) if not isinstance(t, str) else _peft_match(name, t),
        "a target matched inside a name ('dense' in 'dense_h_to_4h').",
        MATCH,
    ),
    "regex as name": (
        lambda name, t: _peft_match(name, [t] if isinstance(t, str) else t),
        "a string target was treated as a module name.",
        "a string target is a regex: re.fullmatch(target, name).",
    ),
}
SIZE_SLIPS = {
    "A only": (lambda r, i, o, m: r * i, "it forgets B (out x r).", "count r·in for A and out·r for B."),
    "B only": (lambda r, i, o, m: r * o, "it forgets A (r x in).", "count r·in for A and out·r for B."),
    "weight shape": (
        lambda r, i, o, m: r * sum(m.weight.shape),
        "weight.shape is packed on a 4-bit layer (Params4bit, (in·out/2, 1)).",
        "read module.in_features / module.out_features.",
    ),
    "Linear only": (
        lambda r, i, o, m: r * (i + o) if isinstance(m, torch.nn.Linear) else 0,
        "GPT-2's Conv1D layers were skipped (not nn.Linear).",
        "count Conv1D too: in = nx, out = nf.",
    ),
}
GENERIC_FIX = (
    "r·(in + out) per module peft wraps (list: equal or ends with '.' + entry; string: re.fullmatch); "
    "in/out from in_features/out_features, or nx/nf for Conv1D."
)


def _count(model, config: LoraConfig, match=_peft_match, size=None) -> int:
    total = 0
    for name, module in model.named_modules():
        sizes = _sizes(module)
        if sizes and match(name, config.target_modules):
            i, o = sizes
            total += size(config.r, i, o, module) if size else config.r * (i + o)
    return total


def _diagnose(model, config: LoraConfig, got: int, want: int) -> tuple[int | str, str, str]:
    """(rule, what went wrong, fix) for the first familiar slip that reproduces the learner's number."""
    for match, why, fix in MATCH_SLIPS.values():
        if _count(model, config, match=match) == got != want:
            return 1, why, fix
    for size, why, fix in SIZE_SLIPS.values():
        try:
            if _count(model, config, size=size) == got != want:
                return LORA_SHAPES, why, fix
        except (AttributeError, TypeError):
            continue
    return LORA_SHAPES, "", GENERIC_FIX


def _as_int(value) -> int | None:
    """The learner's count as an int, read through the built-in types' own methods: an int, an integral float,
    numpy's integer or a one-element tensor. A value of the learner's own class is none of these (its `__int__`
    or `__eq__` would run the learner's code after the watch, and could wrap a copy there)."""
    if type(value) is torch.Tensor and value.numel() == 1:  # exactly: a subclass's __torch_function__ is code
        value = value.item()
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value).__module__ == "numpy" and isinstance(value, (numbers.Integral, numbers.Real)):
        return _as_int(value.item())
    return None


def _shown(value) -> str:
    """A returned value for a message: builtins as themselves, anything else by its type (no method of it runs)."""
    return repr(value)[:60] if type(value).__module__ == "builtins" else f"a {type(value).__name__}"


def _call_watched(fn, model, config, case: Case) -> tuple[object, bool]:
    """The learner's result, and whether any peft tuner was built (a wrap, of this model or a copy)."""
    from peft.tuners.tuners_utils import BaseTuner

    built = []
    original_init = BaseTuner.__init__

    def spy(self, *args, **kwargs):
        built.append(type(self).__name__)
        original_init(self, *args, **kwargs)

    BaseTuner.__init__ = spy
    try:
        return fn(model, copy.deepcopy(config)), bool(built)
    except Exception as err:  # the learner's bug: report it as a verdict with a fix
        fail(
            LORA_SHAPES,
            f"{FN} raised {type(err).__name__}: {error_text(err)[:80]} ({case.describe()}).",
            "nn.Linear (Linear4bit too): in_features/out_features; Conv1D: nx/nf; skip other modules.",
        )
    finally:
        BaseTuner.__init__ = original_init


def _run_cases(ns: dict, cases: tuple[Case, ...]) -> None:
    fn = need(ns, FN, where="the exercise 1 cell")
    if not callable(fn):
        fail(
            LORA_SHAPES, f"`{FN}` is not a function.", f"define `def {FN}(model, config):` returning an int."
        )
    for case in cases:
        model, config = _load(case), case.config()
        before = _snapshot(model)
        result, wrapped = _call_watched(
            fn, model, config, case
        )  # before peft's count exists: no frame holds it
        if wrapped or _snapshot(model) != before:
            fail(
                SHAPES_ONLY,
                f"{FN} wrapped or changed its model ({case.describe()}); it must not wrap or change it.",
                "read named_modules() and layer sizes only: no get_peft_model, no requires_grad changes.",
            )
        want = peft_count(model, config)
        got = _as_int(result)
        if got is None:
            fail(
                LORA_SHAPES,
                f"{FN} returned {_shown(result)} ({type(result).__name__}) for {case.describe()}.",
                "return the number of parameters as an int.",
            )
        if got != want:
            rule, why, fix = _diagnose(model, config, got, want)
            fail(
                rule,
                f"{case.describe()}: you count {got:,}, peft adds {want:,}" + (f"; {why}" if why else "."),
                fix,
            )


def count_on_linear_models(ns: dict) -> None:
    """count_lora_parameters agrees with peft on nn.Linear models of six architectures (list and regex targets)."""
    _run_cases(ns, LINEAR_CASES)


def count_on_conv1d_and_4bit(ns: dict) -> None:
    """count_lora_parameters agrees with peft on GPT-2's Conv1D and on a 4-bit NF4 model."""
    _run_cases(ns, LAYER_CASES)


# ---- exercise 2: the wrapped course model ---------------------------------------------------------------


def _record(ns: dict, check: str) -> dict:
    """Publish the manifest of the learner's `model` (checks.evidence); the judge reads it. A model that was never
    wrapped is recorded with `lora_config`'s targets, which say why."""
    model = need(ns, "model", torch.nn.Module, where="the exercise 2 cell")
    record = manifest(model, None if isinstance(model, PeftModel) else ns.get("lora_config"))
    value = ns.get("trainable_percent")
    record["trainable_percent"] = {
        "defined": "trainable_percent" in ns,
        "type": type(value).__name__,
        "value": value if isinstance(value, numbers.Real) else None,
    }
    return publish(check, record)


def course_model_wrapped(ns: dict) -> None:
    """The course model carries LoRA (r=16, alpha=32) on exactly q/k/v/o_proj."""
    judges.course_model_wrapped(_record(ns, "course_model_wrapped"))


def trainable_share(ns: dict) -> None:
    """Only LoRA trains (base frozen), well under 1% by peft's counter, and trainable_percent says so."""
    judges.course_model_share(_record(ns, "course_model_share"))
