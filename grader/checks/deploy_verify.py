"""Lab 05's deployment copy, verified outside the learner's kernel against the grader's own merge.

Runs in the trusted process (checks/outside.py), never in the kernel: the base comes from the course
profile, not from the learner's variables, and every file is read as safetensors (no pickle crosses
the sandbox boundary). Like is compared with like: the learner's merged weights against a merge of
the learner's saved adapter onto a fresh 16-bit base, made here, so the verdict does not depend on
the CPU (bf16 kernels differ between vendors), the thread count or the load.
"""

from __future__ import annotations

from pathlib import Path

from checks import error_text, fail
from checks.deploy_files import DEPLOY_RULE

# Error of the deployment copy, relative to the size of the merged update ||merge - base||. Measured on
# the tiny model: 0 for a merge made the lab's way, 0.007 for one computed in bf16 (as on a GPU), 1.0
# for the unmerged base and about 1.4 for another adapter merged in.
UPDATE_RTOL = 0.1


def deploy_matches_adapter(paths: dict[str, Path]) -> None:
    """DEPLOY_DIR's weights are ADAPTER_DIR merged into the course's 16-bit base model."""
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
