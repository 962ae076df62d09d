"""QLoRA on a 1.1B Llama-architecture model built from its config (random weights: nothing is downloaded).

    python bench/big_llama.py [--device cuda] [--steps 5] [--batches 1 4 8] [--seq 512]

Builds TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads / 4 KV heads, vocab 32000) with random
weights, saves it in bf16, loads it back in NF4 + double quant, prepares it for k-bit training, adds LoRA
r=16 on q/k/v/o, and trains a few steps per batch size. It prints the peak GPU memory of each setting
and whether it fits a 16 GB T4, so workshop hosts know what their cards hold. `--hidden/--layers` shrink
the model for a quick check on a CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

T4_USABLE_GIB = 14.5  # a 16 GB T4 shows about 15 GiB to torch; keep a margin for the CUDA context


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=22)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here: run with --device cpu --hidden 256 --layers 2 for a quick check"
        )
    native_bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    compute = torch.float16 if cuda and not native_bf16 else torch.bfloat16
    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 512),
        vocab_size=32000,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="big-llama-") as folder:
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        model = AutoModelForCausalLM.from_pretrained(
            folder, quantization_config=quant, device_map=args.device
        )
    model = prepare_model_for_kbit_training(model)
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    trainable, total = model.get_nb_trainable_parameters()
    name = torch.cuda.get_device_name(0) if cuda else "CPU"
    print(
        f"{name}: Llama {total / 1e9:.2f}B parameters in NF4, LoRA trains {trainable:,} ({trainable / total:.2%})"
    )
    print(f"compute dtype {compute}; weights in memory {model.get_memory_footprint() / 2**30:.2f} GiB")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    print(f"{'batch':>5} {'seq':>5} {'s/step':>7} {'tokens/s':>9} {'peak GiB':>9}  fits a T4")
    for batch in args.batches:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ids = torch.randint(0, config.vocab_size, (batch, args.seq), device=model.device)
        start = time.perf_counter()
        try:
            for _ in range(args.steps):
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            if cuda:
                torch.cuda.synchronize()
        except torch.OutOfMemoryError:
            print(f"{batch:>5} {args.seq:>5}  out of memory on this card")
            continue
        per_step = (time.perf_counter() - start) / args.steps
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        fits = "-" if not cuda else "yes" if peak <= T4_USABLE_GIB else "no"
        print(
            f"{batch:>5} {args.seq:>5} {per_step:7.2f} {batch * args.seq / per_step:9.0f} {peak:9.2f}  {fits}"
        )


if __name__ == "__main__":
    main()
