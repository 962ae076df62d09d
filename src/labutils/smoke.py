"""The correction guide's QLoRA pattern end to end on the course's causal LM, with a summary table.

This is the `make demo` smoke path: if it passes, every piece a lab relies on works here (4-bit
loading, kbit preparation, LoRA, training, adapter-only saving, reloading onto a fresh base).
"""

from __future__ import annotations

import copy
import numbers
import tempfile
import time
from pathlib import Path


def train_causal_lm(
    model,
    tokenizer,
    texts: list[str],
    steps: int,
    learning_rate: float,
    batch_size: int = 8,
    desc: str | None = None,
) -> list[float]:
    """A plain AdamW loop over `texts` (cycled in order), with no loss on padding; the loss per step."""
    import torch
    from tqdm.auto import tqdm

    if (
        isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1
    ):  # numpy ints are Integral
        raise ValueError(
            f"steps={steps!r}: train_causal_lm needs a whole number of steps, at least 1 (0 trains nothing)."
        )
    if tokenizer.pad_token_id is None:  # Llama-2-family hub tokenizers have none; padding gets no loss below
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    losses = []
    for step in tqdm(range(steps), desc=desc, unit="step", disable=desc is None):
        start = step * batch_size % len(texts)
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True).to(
            model.device
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def run(steps: int = 30, out_dir: Path | None = None) -> dict:
    """Run the pattern and return what a summary needs (losses, trainable share, files, reload diff)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from labutils.data import format_instruction, load_instructions
    from labutils.doctor import detect_hardware, recommended_compute_dtype
    from labutils.notebook import quiet
    from labutils.profiles import course_model

    quiet()
    started = time.perf_counter()
    hw = detect_hardware()
    compute_dtype = recommended_compute_dtype(hw["cuda_available"], hw["bf16_supported"])
    path = course_model("causal_lm")
    tokenizer = AutoTokenizer.from_pretrained(path)

    bnb_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=True,
    )
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb_config, device_map="auto")
    model = prepare_model_for_kbit_training(model)
    lora_config = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        lora_dropout=0.05,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora_config)
    model.print_trainable_parameters()
    trainable, total = model.get_nb_trainable_parameters()

    texts = [format_instruction(ex, tokenizer.eos_token) for ex in load_instructions()["train"]]
    losses = train_causal_lm(model, tokenizer, texts, steps=steps, learning_rate=2e-3, desc="QLoRA training")

    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="peft-smoke-"))
    adapter_dir = out_dir / "lora-adapter"
    model.save_pretrained(adapter_dir)  # adapter only: a few hundred KB, not the base model
    files = {p.name: p.stat().st_size for p in sorted(adapter_dir.iterdir()) if p.is_file()}

    # Reload onto a fresh base and compare outputs with the trained model.
    model.eval()
    probe = tokenizer(["### Instruction:\nWhat is 2 plus 3?\n### Response:\n"], return_tensors="pt").to(
        model.device
    )
    with torch.no_grad():
        expected = model(**probe).logits.float()
    fresh = AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb_config, device_map="auto")
    # Prepared like the trained model (fp32 norms and head), so any difference is the adapter's alone.
    fresh = prepare_model_for_kbit_training(fresh)
    reloaded = PeftModel.from_pretrained(fresh, adapter_dir).eval()
    with torch.no_grad():
        got = reloaded(**probe).logits.float()

    return {
        "device": str(model.device),
        "compute_dtype": str(compute_dtype).replace("torch.", ""),
        "trainable": trainable,
        "total": total,
        "losses": losses,
        "adapter_dir": adapter_dir,
        "files": files,
        "reload_max_diff": (expected - got).abs().max().item(),
        "seconds": time.perf_counter() - started,
    }


def summary(result: dict) -> str:
    share = 100 * result["trainable"] / result["total"]
    first, last = result["losses"][0], result["losses"][-1]
    rows = [
        ("device / compute dtype", f"{result['device']} / {result['compute_dtype']}"),
        ("quantization", "NF4 + double quant (bitsandbytes Linear4bit)"),
        ("trainable parameters", f"{result['trainable']:,} of {result['total']:,} = {share:.3f}%"),
        ("training loss", f"{first:.3f} -> {last:.3f} over {len(result['losses'])} steps"),
        ("adapter files", ", ".join(f"{n} ({s / 1024:.0f} KiB)" for n, s in result["files"].items())),
        ("reload max |diff|", f"{result['reload_max_diff']:.2e}"),
        ("wall time", f"{result['seconds']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    result = run()
    print("\nQLoRA smoke run (correction guide pattern, tiny profile)")
    print(summary(result))
    ok = result["losses"][-1] < result["losses"][0] and result["reload_max_diff"] < 1e-3
    print("smoke: PASS" if ok else "smoke: FAIL")
    return 0 if ok else 1
