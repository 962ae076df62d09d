"""Hidden checks for lab 03 (rank and alpha), one per rule.

They read the learner's `sweep` (rank -> trainable parameters and loss) and `chosen_config` (a
LoraConfig) and compare them with what peft itself does on the course's causal LM, rebuilt on the
meta device (no weights, no memory), never with the learner's printed output.
"""

from __future__ import annotations

import copy
import math
from functools import cache
from numbers import Integral, Real

from peft import LoraConfig

from checks import error_text, fail, need
from checks.evidence import key_text, plain, publish
from checks.inspect_model import leaf, lora_wrapped
from checks.lab03_rank_alpha import judges
from labutils.facts import LLAMA_ATTENTION

# Named rules of the guide's correct pattern that this lab's checks enforce besides Mistakes 1 and 2.
SWEEP = "Rank sweep: the same budget for every rank from 2 to 64, counted with peft's own counter"

RANKS = (2, 4, 8, 16, 32, 64)  # the sweep the lab asks for (extra ranks are welcome)


@cache
def _model_config():
    from transformers import AutoConfig

    from labutils import course_model

    return AutoConfig.from_pretrained(course_model("causal_lm"))


def _meta_peft_model(config: LoraConfig):
    """The course causal LM on the meta device, wrapped by peft with (a copy of) `config`."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model_config = _model_config()  # outside the meta context: it may build the tiny model on first use
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(model_config)
    return get_peft_model(base, copy.deepcopy(config))


@cache
def peft_trainable(r: int) -> int:
    """peft's own count of trainable parameters for rank r on q/k/v/o_proj with alpha = 2r."""
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(LLAMA_ATTENTION), task_type="CAUSAL_LM")
    return _meta_peft_model(config).get_nb_trainable_parameters()[0]


def _number(value):
    """A number of the learner's sweep, read without running the learner's code: an int or a float as itself,
    a numpy number or a one-element torch tensor (a loss) as its value; anything else as plain data's text."""
    import torch

    if issubclass(type(value), torch.Tensor):
        with torch._C.DisableTorchFunction():
            return torch.Tensor.item(value) if torch.Tensor.numel(value) == 1 else plain(value)
    return plain(value)


def _entry(rank, value) -> tuple[object, object]:
    """(trainable, loss) of one sweep entry, a dict with those two keys."""
    if (
        not issubclass(type(value), dict)
        or "trainable" not in dict.keys(value)
        or "loss" not in dict.keys(value)
    ):
        found = (
            f"the keys {sorted(key_text(k) for k in dict.keys(value))}"
            if issubclass(type(value), dict)
            else f"a {type(value).__name__}"
        )
        fail(
            SWEEP,
            f"sweep[{rank}] is {found}, not a dict with 'trainable' and 'loss'.",
            f"sweep[{rank}] = {{'trainable': trainable, 'loss': loss}}.",
        )
    return _number(dict.get(value, "trainable")), _number(dict.get(value, "loss"))


def _sweep(ns: dict) -> dict[int, tuple[object, object]]:
    """The learner's sweep as plain data: read through dict's own methods, so no method of the learner's
    (a dict subclass's items(), a key's comparison) runs inside the check."""
    sweep = need(ns, "sweep", dict, where="Exercise 1")
    keys = [(k, plain(k)) for k in dict.keys(sweep)]
    bad = [shown for k, shown in keys if type(shown) is not int]
    if bad:
        fail(
            SWEEP,
            f"sweep's keys should be the ranks (ints); found {bad[0]!r}.",
            "sweep[r] = {...} for r in RANKS.",
        )
    return {r: _entry(r, dict.__getitem__(sweep, k)) for k, r in sorted(keys, key=lambda pair: pair[1])}


def sweep_ranks(ns: dict) -> None:
    """The sweep covers every rank of RANKS: small ones (capacity) and large ones (cost)."""
    sweep = _sweep(ns)
    missing = [r for r in RANKS if r not in sweep]
    if missing:
        low = [r for r in missing if r < 8]
        high = [r for r in missing if r > 32]
        why = []
        if low:
            why.append("without ranks below 8 you cannot see where capacity runs out")
        if high:
            why.append("without ranks above 32 you cannot see what a large rank costs")
        fail(
            SWEEP,
            f"the sweep has ranks {sorted(sweep)} but misses {missing}"
            + (f": {' and '.join(why)}." if why else "."),
            f"run the same budget for every r in RANKS = {RANKS}.",
        )


def sweep_counts(ns: dict) -> None:
    """Each trainable count is peft's own, for r on q/k/v/o_proj (so it grows linearly with r)."""
    for r, (trainable, _) in _sweep(ns).items():
        want = peft_trainable(r)
        if not isinstance(trainable, Integral) or isinstance(trainable, bool) or trainable != want:
            ratio = f" ({trainable / want:.3g}x peft's)" if isinstance(trainable, Real) and want else ""
            fail(
                SWEEP,
                f"sweep[{r}] says {trainable!r}{ratio}; peft counts {want:,} for r={r} on q/k/v/o_proj.",
                "record model.get_nb_trainable_parameters()[0] after get_peft_model(fresh_base(), LoraConfig(r=r, "
                "lora_alpha=2 * r, target_modules=TARGETS, task_type='CAUSAL_LM')); hand formulas miss that "
                "A is r x in and B is out x r, and that k_proj/v_proj are narrower (grouped-query attention).",
            )


def sweep_losses(ns: dict) -> None:
    """Each loss is a real number from after the training budget (below the untrained loss, not all equal), and
    at the smallest and largest rank it is the loss the worked example's recipe (alpha = 2r) reaches."""
    sweep = _sweep(ns)
    losses = {}
    for r, (_, loss) in sweep.items():
        if not isinstance(loss, Real) or isinstance(loss, bool) or not math.isfinite(loss):
            fail(
                SWEEP,
                f"sweep[{r}]'s loss is {loss!r}, not a finite number.",
                "record the loss the training budget ends with (a float, e.g. losses[-1]).",
            )
        losses[r] = float(loss)
    base = _base_loss()
    untrained = [r for r, loss in losses.items() if not loss < base - 1e-3]
    if untrained:
        fail(
            SWEEP,
            f"the loss for r={untrained[0]} ({losses[untrained[0]]:.3f}) is not below the untrained "
            f"model's ({base:.3f}): it was recorded before training or training did not run.",
            "train each rank for the same STEPS at LEARNING_RATE, then record the final loss.",
        )
    if len(losses) > 1 and max(losses.values()) - min(losses.values()) < 1e-6:
        fail(
            SWEEP,
            f"every rank has the same loss ({next(iter(losses.values())):.4f}). LoRA starts with B = 0, so "
            "before training every rank gives the same loss: this is the loss before the budget, "
            "or the same model was measured each time.",
            "record the loss after training each rank's own model (e.g. losses[-1]).",
        )
    for r in (RANKS[0], RANKS[-1]):
        if r not in losses:
            continue  # test_sweep_ranks names the missing rank
        first, last = _recipe_losses(r)
        # Another seed moves the loss by a few percent of what training gained (0.08 of 1.58 at r=64 here);
        # an alpha that does not move with r (2/r, or a fixed 16) by a fifth of it or more. Written so that a
        # loss that is not a number fails.
        if not abs(losses[r] - last) <= RECIPE_TOLERANCE * (first - last):
            fail(
                SWEEP,
                f"sweep[{r}]'s loss is {losses[r]:.3f}, where the worked example's recipe (lora_alpha = 2 * r, "
                f"STEPS steps at LEARNING_RATE from torch.manual_seed(SEED)) ends at {last:.3f} here: "
                "this rank was not trained on the lab's budget. An alpha that does not move with r scales the "
                "update by alpha/r, so large ranks barely train (or small ones overshoot).",
                "LoraConfig(r=r, lora_alpha=2 * r, ...) and train_causal_lm(model, tokenizer, texts, steps=STEPS, "
                "learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE) for every rank.",
            )


RECIPE_TOLERANCE = 0.15  # of the recipe's own loss drop at that rank


# The lab's fixed budget, as its locked set-up cell defines it (tests/grader/checks/test_lab03_rank_alpha.py
# holds the two in agreement). The recipe reads these, never the learner's names, which the learner's cells
# may have rebound (an honest follow-up experiment) or changed on purpose (a first batch of empty texts gives
# a NaN loss).
BUDGET = {"STEPS": 8, "LEARNING_RATE": 2e-3, "BATCH_SIZE": 4, "SEED": 0}


@cache
def _lab_setup() -> tuple:
    """What the lab's set-up cell builds from the course: the model id, the device, the tokenizer and the
    training texts."""
    import torch
    from transformers import AutoTokenizer

    from labutils import course_model
    from labutils.data import format_instruction, load_instructions

    model = course_model("causal_lm")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [format_instruction(example, tokenizer.eos_token) for example in load_instructions()["train"]]
    return model, device, tokenizer, texts


@cache
def _base_loss() -> float:
    """The untrained model's loss on the budget's last batch (the lab's BASE_LOSS)."""
    import torch
    from transformers import AutoModelForCausalLM

    model, device, tokenizer, texts = _lab_setup()
    last = (BUDGET["STEPS"] - 1) * BUDGET["BATCH_SIZE"] % len(texts)
    batch = tokenizer(texts[last : last + BUDGET["BATCH_SIZE"]], return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        untrained = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(device)
        return untrained(**batch, labels=labels).loss.item()


def _recipe_losses(r: int) -> tuple[float, float]:
    """The first and last loss of the worked example's recipe at rank r (lora_alpha = 2r, the lab's seed and
    budget), trained here on a fresh base, with the learner's random state left as it was."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from labutils.smoke import train_causal_lm

    model, device, tokenizer, texts = _lab_setup()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(BUDGET["SEED"])
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(device)
        config = LoraConfig(
            r=r, lora_alpha=2 * r, target_modules=list(LLAMA_ATTENTION), task_type="CAUSAL_LM"
        )
        losses = train_causal_lm(
            get_peft_model(base, config),
            tokenizer,
            texts,
            steps=BUDGET["STEPS"],
            learning_rate=BUDGET["LEARNING_RATE"],
            batch_size=BUDGET["BATCH_SIZE"],
        )
    return losses[0], losses[-1]


def _chosen(ns: dict) -> LoraConfig:
    return need(ns, "chosen_config", LoraConfig, where="Exercise 2")


def chosen_rank(ns: dict) -> None:
    """The chosen rank suits a simple instruction task: 8-16 (the guide's default range)."""
    judges.chosen_rank(publish("chosen_rank", _chosen(ns).to_dict()))


def chosen_alpha(ns: dict) -> None:
    """lora_alpha = 2r, so the update is scaled by alpha/r = 2 whatever the rank."""
    judges.chosen_alpha(publish("chosen_alpha", _chosen(ns).to_dict()))


def chosen_targets(ns: dict) -> None:
    """chosen_config wraps all four Llama attention projections (MLP projections optional), for CAUSAL_LM.

    Recorded: what peft itself wraps with these targets on the course model, rebuilt on the meta device."""
    cfg = _chosen(ns)
    probe = copy.deepcopy(cfg)
    probe.task_type = "CAUSAL_LM"  # the targets alone decide what gets wrapped; task_type is checked apart
    record = {"config": cfg.to_dict(), "error": None, "wrapped": [], "candidates": []}
    try:
        model = _meta_peft_model(probe)
        record["wrapped"] = sorted(lora_wrapped(model))
        record["candidates"] = sorted(n for n, _ in model.named_modules() if leaf(n) in LLAMA_ATTENTION)
    except ValueError as err:  # NoMatchingPeftModuleError is a ValueError
        record["error"] = error_text(err)[:160]
    judges.chosen_targets(publish("chosen_targets", record))
