"""On-disk checks of lab 05 (save the adapter, load it, merge only to deploy).

The folder checks run inside the learner's kernel (hidden test cells, through kernel.py) and, in a fresh
process, outside it (checks.outside). They read folder listings, config.json and safetensors headers
(names, dtypes, shapes), never torch. The deployment copy's weights are verified outside the kernel only
(`deploy_matches_adapter`), against a merge the grader makes itself: the base comes from the course
profile, not from the learner's variables, and every file is read as safetensors (no pickle crosses the
sandbox boundary). Like is compared with like, so the verdict does not depend on the CPU (bf16 kernels
differ between vendors), the thread count or the load.
"""

from __future__ import annotations

import json
from pathlib import Path

from checks import error_text, fail, need
from checks.adapter_files import adapter_only_saved as adapter_folder_only
from checks.adapter_files import adapter_trained, full_weight_files, safetensors_header

DEPLOY_RULE = (
    "Merge only to deploy: merge_and_unload() on an unquantized (16-bit) base, saved in its own folder"
)
# safetensors dtype codes of floating-point tensors; bitsandbytes stores packed 4-bit codes as U8.
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
QUANT_STATE = ("absmax", "quant_map", "quant_state")  # bitsandbytes 4-bit state saved beside the codes


def _paths(ns: dict) -> tuple[Path, Path, Path]:
    adapter_dir = Path(need(ns, "ADAPTER_DIR", (str, Path), where="the set-up cell"))
    deploy_dir = Path(need(ns, "DEPLOY_DIR", (str, Path), where="the set-up cell"))
    output_dir = Path(ns.get("OUTPUT_DIR", adapter_dir.parent))
    return output_dir, adapter_dir, deploy_dir


def _inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _is_plain_model(path: Path) -> bool:
    """A full-model weights file without LoRA or wrapped-base names: a merged (or plain) model."""
    if path.suffix != ".safetensors":
        return path.name == "pytorch_model.bin"
    try:
        names = safetensors_header(path)
    except (OSError, ValueError):
        return False
    return bool(names) and not any("lora_" in n or "base_layer" in n for n in names)


def adapter_only_saved(ns: dict) -> None:
    """ADAPTER_DIR holds the trained adapter only; no full weights lie under OUTPUT_DIR outside DEPLOY_DIR."""
    output_dir, adapter_dir, deploy_dir = _paths(ns)
    adapter_folder_only({"ADAPTER_DIR": adapter_dir})  # adapter files only, every tensor a lora_ one
    stray = [p for p in full_weight_files(output_dir) if not _inside(p, deploy_dir)]
    if stray:
        shown = ", ".join(str(p) for p in stray[:3])
        fail(
            4,
            f"full model weights were saved beside the adapter ({shown}): on a real model that is "
            "gigabytes per copy, and a merged or base copy cannot be swapped or stacked like an adapter.",
            "save only the adapter (model.save_pretrained(ADAPTER_DIR)); the one full copy, merged for "
            "deployment, belongs in DEPLOY_DIR.",
        )
    adapter_trained({"ADAPTER_DIR": adapter_dir})


def deploy_copy_saved(ns: dict) -> None:
    """DEPLOY_DIR holds a merged, unquantized model with its tokenizer, and no merged copy lies anywhere else under
    OUTPUT_DIR."""
    output_dir, adapter_dir, deploy_dir = _paths(ns)
    elsewhere = [
        p for p in full_weight_files(output_dir) if not _inside(p, deploy_dir) and _is_plain_model(p)
    ]
    if elsewhere:
        shown = ", ".join(str(p) for p in elsewhere[:3])
        fail(
            4,
            f"a merged model was saved outside DEPLOY_DIR ({shown}). The adapter folder must keep the "
            "adapter alone, so it can be loaded onto a base, swapped or stacked.",
            "merged.save_pretrained(DEPLOY_DIR), and nothing but model.save_pretrained(ADAPTER_DIR) in the "
            "adapter folder.",
        )
    weights = sorted(deploy_dir.glob("*.safetensors")) if deploy_dir.is_dir() else []
    if not weights or not (deploy_dir / "config.json").exists():
        adapter = (deploy_dir / "adapter_config.json").exists()
        fail(
            DEPLOY_RULE,
            f"{deploy_dir} holds an adapter, not a merged model."
            if adapter
            else f"{deploy_dir} holds no saved model (config.json and *.safetensors).",
            "merged = PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload(), then "
            "merged.save_pretrained(DEPLOY_DIR).",
        )
    config = json.loads((deploy_dir / "config.json").read_text())
    tensors = {}
    for path in weights:
        try:
            tensors |= safetensors_header(path)
        except ValueError as err:
            fail(DEPLOY_RULE, f"{err}.", "merged.save_pretrained(DEPLOY_DIR) (safetensors, the default).")
    packed = sorted(
        n for n, t in tensors.items() if t["dtype"] not in FLOAT_DTYPES or any(s in n for s in QUANT_STATE)
    )
    if config.get("quantization_config") or packed:
        method = (config.get("quantization_config") or {}).get("quant_method", "bitsandbytes")
        found = f"{len(packed)} packed or quantization-state tensors (e.g. {packed[0]})" if packed else "none"
        fail(
            DEPLOY_RULE,
            f"the deployment copy was merged into a quantized base (config.json quantization: {method}; "
            f"{found}). Merging into 4-bit rounds the update into 4-bit codes: re-quantized weights, "
            "lost precision.",
            "merge from an unquantized base: AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.bfloat16), "
            "then PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload().",
        )
    unmerged = sorted(n for n in tensors if "lora_" in n or "base_layer" in n)
    if unmerged:
        fail(
            DEPLOY_RULE,
            f"the deployment copy is not merged: it still holds LoRA or wrapped-base tensors (e.g. {unmerged[0]}).",
            "save the result of merge_and_unload(), a plain transformers model.",
        )
    if not (deploy_dir / "tokenizer_config.json").is_file():
        fail(
            DEPLOY_RULE,
            f"{deploy_dir} holds the merged model but no tokenizer (no tokenizer_config.json): the folder is not "
            "self-contained, and whoever serves it from there cannot turn a prompt into tokens.",
            "tokenizer.save_pretrained(DEPLOY_DIR) beside merged.save_pretrained(DEPLOY_DIR).",
        )


# Error of the deployment copy, relative to the size of the merged update ||merge - base||. Measured on
# the tiny model: 0 for a merge made the lab's way, 0.007 for one computed in bf16 (as on a GPU), 1.0
# for the unmerged base and about 1.4 for another adapter merged in.
UPDATE_RTOL = 0.1


def deploy_matches_adapter(paths: dict[str, Path]) -> None:
    """DEPLOY_DIR's weights are ADAPTER_DIR merged into the course's 16-bit base model, and that merge changes the
    base (an adapter whose update is zero would make any copy of the base pass)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import labutils

    adapter_dir, deploy_dir = Path(paths["ADAPTER_DIR"]), Path(paths["DEPLOY_DIR"])
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        fail(
            DEPLOY_RULE,
            f"{adapter_dir} holds no adapter to compare the deployment copy with.",
            "model.save_pretrained(ADAPTER_DIR) before merging for deployment.",
        )
    if not list(deploy_dir.glob("*.safetensors")):
        fail(
            DEPLOY_RULE, f"{deploy_dir} holds no safetensors weights.", "merged.save_pretrained(DEPLOY_DIR)."
        )
    model = labutils.course_model("causal_lm")
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    base_weights = {name: t.float().clone() for name, t in base.state_dict().items()}
    trusted = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().state_dict()
    try:
        deployed = AutoModelForCausalLM.from_pretrained(
            deploy_dir, dtype="auto", use_safetensors=True
        ).state_dict()
    except (OSError, ValueError, RuntimeError) as err:
        fail(
            DEPLOY_RULE,
            f"{deploy_dir} does not load ({type(err).__name__}: {error_text(err)[:200]}).",
            "merged.save_pretrained(DEPLOY_DIR), with the model merged from a 16-bit base.",
        )
    missing = sorted(set(trusted) - set(deployed))
    if missing or any(deployed[n].shape != t.shape for n, t in trusted.items()):
        fail(
            DEPLOY_RULE,
            f"the deployment copy is not the course model merged (e.g. {(missing or ['shapes differ'])[0]}).",
            "merge the saved adapter into the base: PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload().",
        )
    error = sum(float(((deployed[n].float() - t.float()) ** 2).sum()) for n, t in trusted.items()) ** 0.5
    update = sum(float(((t.float() - base_weights[n]) ** 2).sum()) for n, t in trusted.items()) ** 0.5
    if not update > 0:
        fail(
            DEPLOY_RULE,
            f"the adapter saved in {adapter_dir} changes nothing when merged (its update B·A is zero), so no "
            "deployment copy can be shown to compute what the trained adapter computes.",
            "save the trained PeftModel itself (model.save_pretrained(ADAPTER_DIR)), then merge that adapter: "
            "PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload().",
        )
    if not error <= UPDATE_RTOL * update:
        ratio = error / update if update else float("inf")
        fail(
            DEPLOY_RULE,
            f"the deployment copy's weights are not the saved adapter merged into the base: they differ from the "
            f"grader's own merge of {adapter_dir} by {ratio:.0%} of the adapter's update (at most "
            f"{UPDATE_RTOL:.0%}). It does not compute what the trained adapter computes.",
            "merge the trained adapter: PeftModel.from_pretrained(base, ADAPTER_DIR).merge_and_unload(), then "
            "merged.save_pretrained(DEPLOY_DIR).",
        )
