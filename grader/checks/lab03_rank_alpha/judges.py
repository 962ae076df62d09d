"""Lab 03's judges: the chosen config's rank, alpha and targets."""

from __future__ import annotations

from checks import TASK_TYPE, fail
from checks.inspect_model import leaf
from labutils.facts import LLAMA_ATTENTION, LLAMA_MLP, RANK_RANGE

ALPHA = "LoRA alpha: usually 2x rank (lora_alpha = 2 * r)"


def chosen_rank(cfg: dict) -> None:
    """The chosen rank suits a simple instruction task: 8-16 (the guide's default range)."""
    low, high = RANK_RANGE
    ranks = [cfg["r"], *(cfg["rank_pattern"] or {}).values()]
    if bad := [r for r in ranks if not (isinstance(r, int) and not isinstance(r, bool) and r > 0)]:
        fail(2, f"r={bad[0]!r} is not a positive integer.", f"an integer r between {low} and {high}.")
    if max(ranks) > 64:
        fail(
            2,
            f"r={max(ranks)} is above 64: the guide says never without a justification, and the sweep shows "
            "what it costs (parameters and adapter memory grow linearly with r).",
            f"r between {low} and {high} for this simple instruction task.",
        )
    if max(ranks) > high:
        fail(
            2,
            f"r={max(ranks)} is too high for this simple instruction task: it multiplies trainable "
            f"parameters and adapter memory (r=64 is {64 // high}x r={high}) for little gain. 32-64 is for "
            "complex tasks with much data. In the known-rank task of section 3 the loss stops improving once r "
            "reaches the update's rank: past that plateau, rank adds cost and nothing else.",
            f"r between {low} and {high} (the guide: 8-16 for most tasks).",
        )
    if min(ranks) < low:
        fail(
            2,
            f"r={min(ranks)} is too low: the adapter may lack the capacity to learn the task "
            "(in the known-rank task of section 3, a rank below the update's rank leaves the loss far from zero; "
            "in the sweep, small ranks end with a higher loss on the same budget).",
            f"r between {low} and {high} (the guide: start with 8-16, increase if underfitting).",
        )


def chosen_alpha(cfg: dict) -> None:
    """lora_alpha = 2r, so the update is scaled by alpha/r = 2 whatever the rank."""
    if cfg["use_rslora"]:
        fail(
            ALPHA,
            "use_rslora=True scales the update by alpha/sqrt(r), not alpha/r; this lab uses the plain scaling.",
            "leave use_rslora off and set lora_alpha = 2 * r.",
        )
    pairs = [(cfg["r"], cfg["lora_alpha"])]
    for key, r in (cfg["rank_pattern"] or {}).items():
        pairs.append((r, (cfg["alpha_pattern"] or {}).get(key, cfg["lora_alpha"])))
    for r, alpha in pairs:
        if alpha != 2 * r:
            fail(
                ALPHA,
                f"lora_alpha={alpha} with r={r}: the update is scaled by alpha/r = {alpha / r:g}, not 2. Unless "
                "alpha moves with r (alpha = 2r), changing the rank also changes the size of every update "
                "(a fixed alpha silently scales a larger rank down), so the learning rate no longer means "
                "the same thing across ranks.",
                f"lora_alpha = 2 * r = {2 * r}.",
            )


def chosen_targets(record: dict) -> None:
    """chosen_config wraps all four Llama attention projections (MLP projections optional), for CAUSAL_LM."""
    cfg = record["config"]
    if record["error"] is not None:
        fail(
            1,
            f"target_modules={cfg['target_modules']!r} does not fit this Llama model ({record['error']}).",
            "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for Llama (BERT's are query/key/value).",
        )
    wrapped = set(record["wrapped"])
    missing = sorted({leaf(n) for n in set(record["candidates"]) - wrapped})
    if missing:
        fail(
            1,
            f"chosen_config leaves {', '.join(missing)} without an adapter (target_modules="
            f"{cfg['target_modules']!r}); a partly wrong list is accepted silently by peft.",
            "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'] for Llama.",
        )
    stray = sorted({leaf(n) for n in wrapped if leaf(n) not in LLAMA_ATTENTION + LLAMA_MLP})
    if stray:
        fail(
            1,
            f"chosen_config also wraps {', '.join(stray)}, which are not attention or MLP projections.",
            "target only q_proj, k_proj, v_proj, o_proj (optionally the MLP projections).",
        )
    if cfg["task_type"] != "CAUSAL_LM":  # a TaskType enum is recorded as its text
        fail(
            TASK_TYPE, f"task_type is {cfg['task_type']!r}.", "task_type='CAUSAL_LM' (or TaskType.CAUSAL_LM)."
        )
