"""Lab 08's judges: resuming, the base an adapter belongs to, several adapters, the base's own outputs and a
weighted blend, each from the record its test cell published; the lab's rule titles.
"""

from __future__ import annotations

from checks import fail

RESUME_RULE = (
    "Resume training from the saved adapter: PeftModel.from_pretrained(base, dir, is_trainable=True)"
)


BASE_RULE = "An adapter belongs to one base: check its base's name and its outputs against a saved reference"


MULTI_RULE = "Several adapters on one base: load_adapter each saved one, set_adapter the one that computes"


BASE_ONLY_RULE = "The base's own outputs come from disable_adapter(), not get_base_model()"


BLEND_RULE = "Combine adapters with add_weighted_adapter: combination_type='cat' is the exact weighted sum"


RESUME_FIX = "resumed = PeftModel.from_pretrained(fresh_base(), ADAPTER_DIR, is_trainable=True)."


# Three steps at the resume cell's learning rate move the saved weights by a few percent; a new adapter's
# weights are unrelated to the saved ones (lora_A freshly initialised, lora_B zero): about 100%.
RESUME_MAX_DRIFT = 0.5


SAVED_ATOL = 1e-6  # an adapter loaded from its file holds the saved tensors exactly


BASE_ONLY_ATOL = 1e-4  # the same weights on the same input in eval mode (a GPU may reorder a reduction)


BLEND_MAX_ERROR = 0.05  # 'cat' is exact up to rounding (0.3% here); 'linear' and 'svd' are far off


def resumed_adapter(record: dict) -> None:
    """The saved adapter, trainable (and only it), moved by the training cell."""
    if record["lora_trainable"] == 0:
        fail(
            RESUME_RULE,
            f"`resumed` has 0 trainable parameters (of {record['lora_params']:,} LoRA weights): "
            "PeftModel.from_pretrained loads an adapter frozen, for inference, so training updates nothing.",
            RESUME_FIX,
        )
    if record["other_trainable"]:
        fail(
            RESUME_RULE,
            f"{record['other_trainable']:,} parameters outside the adapter train too: the base model was "
            "unfrozen, so resuming fine-tunes the whole model.",
            "let peft choose what trains: " + RESUME_FIX,
        )
    if not record["matched"] or record["drift"] is None or record["drift"] > RESUME_MAX_DRIFT:
        how = (
            f"its weights are {record['drift']:.0%} away from the saved adapter's"
            if record["drift"] is not None
            else "its weights are not the saved adapter's tensors at all"
        )
        fail(
            RESUME_RULE,
            f"the adapter that trains is a NEW one ({how}): get_peft_model creates an adapter, on a base or on a "
            "loaded PeftModel alike; it does not load the trained one, so training starts over.",
            RESUME_FIX,
        )
    if not record["moved"]:
        fail(
            RESUME_RULE,
            "the adapter's weights are still exactly the saved ones: the training cell did not update them.",
            "run the cell that trains `resumed` after loading it with is_trainable=True.",
        )


def base_match(record: dict) -> None:
    """adapter_problems: nothing on the own base; a problem on another checkpoint and on another name."""
    own = record["own base"]
    if own["verdict"] == "inconsistent":
        fail(
            BASE_RULE,
            f"adapter_problems gave two answers for the adapter's own base, loaded twice ({own['detail']}): it "
            "answers by something other than the base it is given.",
            "decide from the base and the adapter folder alone: the name, then the logits against REFERENCE_FILE.",
        )
    for case, result in record.items():
        if result["verdict"] in ("error", "not a list"):
            fail(
                BASE_RULE,
                f"adapter_problems on the {case} {'raised' if result['verdict'] == 'error' else 'returned no list'}: "
                f"{result['detail']}.",
                "return a list of problem descriptions, [] when the adapter belongs to the base.",
            )
    if own["verdict"] != "belongs":
        fail(
            BASE_RULE,
            f"adapter_problems reports problems for the adapter's own, freshly loaded base: {own['detail']}.",
            "compare with the reference on REFERENCE_FILE's input_ids, in eval mode, with the tolerance "
            "1e-3 x the largest reference logit.",
        )
    if record["another checkpoint, same name"]["verdict"] != "flagged":
        fail(
            BASE_RULE,
            "on another checkpoint with the base's name and shapes (other weights), adapter_problems found "
            "nothing, and nothing raises when such a base is loaded.",
            "load the adapter onto the base and compare its logits with the reference saved at training time "
            "(REFERENCE_FILE).",
        )
    if record["same weights, another name"]["verdict"] != "flagged":
        fail(
            BASE_RULE,
            "on a base whose name differs from the one the adapter was trained on, adapter_problems found "
            "nothing.",
            "compare adapter_config.json's base_model_name_or_path with base.config._name_or_path.",
        )


def adapter_set(record: dict) -> None:
    """Both saved adapters loaded under their names, concise active, nothing merged."""
    missing = sorted({"instruct", "concise"} - set(record["adapters"]))
    if missing:
        fail(
            MULTI_RULE,
            f"`multi` has no adapter named {', '.join(missing)} (it has {record['adapters']}).",
            "PeftModel.from_pretrained(fresh_base(), ADAPTER_DIR, adapter_name='instruct'), then "
            "multi.load_adapter(SECOND_DIR, adapter_name='concise').",
        )
    for name, folder in (("instruct", "ADAPTER_DIR"), ("concise", "SECOND_DIR")):
        difference = record[f"{name}_vs_saved"]
        if difference is None or difference > SAVED_ATOL:
            fail(
                MULTI_RULE,
                f"the adapter named {name} is not the one saved in {folder}: add_adapter or get_peft_model make "
                "a new, untrained adapter under that name.",
                f"multi.load_adapter({folder}, adapter_name={name!r}).",
            )
    if record["merged"]:
        fail(
            MULTI_RULE,
            f"{record['merged']} is merged into the base weights: the adapters no longer switch.",
            "keep the adapters unmerged while you switch between them; merge only a deployment copy.",
        )
    if record["active"] != ["concise"]:
        fail(
            MULTI_RULE,
            f"the active adapter is {record['active']}: load_adapter adds an adapter without activating it.",
            "multi.set_adapter('concise').",
        )


def base_only_outputs(record: dict) -> None:
    """The bare base's logits, from `multi`, which keeps both adapters enabled."""
    if not record["layers"]:
        fail(
            BASE_ONLY_RULE,
            "`multi` no longer carries any adapter layer: unload() or merge_and_unload() took them out of the "
            "model, so both adapters are gone from it.",
            "with multi.disable_adapter(): base_only_logits = logits_of(multi).",
        )
    if not record["shape_ok"]:
        fail(
            BASE_ONLY_RULE,
            "base_only_logits do not have the probe's shape.",
            "base_only_logits = logits_of(multi).",
        )
    if record["max_diff"] > BASE_ONLY_ATOL:
        fail(
            BASE_ONLY_RULE,
            f"base_only_logits differ from the bare base's by up to {record['max_diff']:.3g}: an adapter still "
            "computed. get_base_model() returns the base with the LoRA layers peft injected into it, still active.",
            "with multi.disable_adapter(): base_only_logits = logits_of(multi).",
        )
    if not record["enabled"]:
        fail(
            BASE_ONLY_RULE,
            "the adapters of `multi` are left disabled, so it computes the bare base from now on.",
            "use the context manager, `with multi.disable_adapter():`, which enables them again at the end.",
        )


def weighted_blend(record: dict) -> None:
    """An active adapter "blend" whose update is 0.7 x instruct's + 0.3 x concise's in every layer."""
    if "blend" not in record["adapters"]:
        fail(
            BLEND_RULE,
            f"`multi` has no adapter named blend (it has {record['adapters']}).",
            "multi.add_weighted_adapter(['instruct', 'concise'], [0.7, 0.3], 'blend', combination_type='cat').",
        )
    error, swapped = record["error"], record["swapped_error"]
    if error is None or error > BLEND_MAX_ERROR:
        if swapped is not None and swapped <= BLEND_MAX_ERROR:
            found = "the weights are swapped: its update is 0.3 x instruct + 0.7 x concise."
        elif error is None:
            found = (
                "no LoRA layer of `multi` carries blend, instruct and concise together, so the blend's update "
                "cannot be the sum of theirs (were the adapters unloaded or deleted?)."
            )
        else:
            found = (
                f"its update differs from 0.7 x instruct + 0.3 x concise by {error:.0%}: 'linear' averages A and "
                "B separately, so cross terms B_i A_j appear, and 'svd' keeps only a low-rank approximation."
            )
        fail(
            BLEND_RULE,
            found,
            "multi.add_weighted_adapter(['instruct', 'concise'], [0.7, 0.3], 'blend', combination_type='cat').",
        )
    if record["active"] != ["blend"]:
        fail(
            BLEND_RULE,
            f"the active adapter is {record['active']}: add_weighted_adapter adds the blend without activating it.",
            "multi.set_adapter('blend').",
        )
