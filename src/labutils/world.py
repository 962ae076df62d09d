"""The course's pretrained base: a small Llama that has read the biographies of a small world.

No small pretrained language model can be downloaded here, so the course makes one. `data/make_data.py`
writes `data/world/`: a corpus of biographies (160 people, four facts each, written in several ways) and
questions about them, split by person (the validation people's facts are in the corpus, never in the
training questions). `pretrain()` trains a Llama of the tiny profile's causal-LM shape on the corpus;
the result ships as `data/world/base.safetensors` with its tokenizer, because pretraining takes minutes
longer than a set-up should (bench/README.md has the numbers), and `bench/world.py` rebuilds it and
compares.

The vocabulary trick: the tokenizer of the world has 858 tokens, the model it was pretrained for 32,000 rows
(a real Llama's vocabulary, which the tiny causal LM had then: `PRETRAIN_VOCAB`). Rather than 32,000 logits per
token, 31,142 of them for tokens no text uses, pretraining trains the used rows plus one shared "rest" row whose
logit counts once for every unused token (its logit + log(number of unused tokens)). `full_state()` then copies
the rest row into every unused row of a head of any size. The course ships the base with 8,192 rows (the
`world_lm` role of labutils.models, the capstone's model): the unused tokens then share less probability than in
pretraining, every used token's logit is as trained, so greedy answers are the same as the small model's.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from labutils.data import data_dir, format_prompt
from labutils.errors import CourseError

WORLD_FILES = {
    "corpus": "world/corpus.txt",
    "train": "world/train.jsonl",
    "validation": "world/validation.jsonl",
}
BASE_WEIGHTS = "world/base.safetensors"
BASE_TOKENIZER = "world/tokenizer.json"
# How the shipped base was trained (bench/world.py rebuilds it with these).
PRETRAIN_STEPS = 6000
PRETRAIN_SEED = 0
PRETRAIN_BATCH = 32
PRETRAIN_LR = 3e-3
PRETRAIN_WARMUP = 50
# The head the shipped base was pretrained for: its "rest" row stands for the unused ones of these rows.
PRETRAIN_VOCAB = 32000


def _path(relative: str) -> Path:
    path = data_dir() / relative
    if not path.is_file():
        remedy = (
            "python bench/world.py pretrain"
            if relative in (BASE_WEIGHTS, BASE_TOKENIZER)
            else "python data/make_data.py"
        )
        raise CourseError(f"{path} is missing: rebuild it with `{remedy}` (from a clone of the course).")
    return path


def corpus() -> list[str]:
    """The pretraining passages (separated by blank lines in the file)."""
    return _path(WORLD_FILES["corpus"]).read_text(encoding="utf-8").strip().split("\n\n")


def questions(split: str) -> list[dict]:
    with _path(WORLD_FILES[split]).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_tokenizer():
    """A byte-level BPE over the corpus and the question prompts (answers are corpus sentences)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from labutils.models import SPECIAL_TOKENS

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # A word at the start of a line is the same token as in the middle of a sentence ("\nThey" -> "\n", " They"),
    # so the first word of an answer is one the base has read (decoded text keeps that space: strip it).
    tok.normalizer = normalizers.Replace("\n", "\n ")
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    prompts = [format_prompt(q["instruction"]) for split in ("train", "validation") for q in questions(split)]
    tok.train_from_iterator(corpus() + prompts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def shipped_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_path(BASE_TOKENIZER)))


def small_config(vocab_rows: int, full_config: dict):
    from transformers import LlamaConfig

    return LlamaConfig(
        **{**full_config, "vocab_size": vocab_rows}, pad_token_id=0, bos_token_id=1, eos_token_id=2
    )


def pretrain(
    full_config: dict, steps: int = PRETRAIN_STEPS, seed: int = PRETRAIN_SEED, progress: bool = True
):
    """Train the used rows (+ the rest row) on the corpus; returns (state dict in fp32, tokenizer, losses)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    tok = build_tokenizer()
    used = tok.get_vocab_size()
    full_vocab = full_config["vocab_size"]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(small_config(used + 1, full_config))
    texts = [tok.encode(t).ids for t in corpus()]
    opt = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
    # Linear warm-up, then a cosine decay to zero at the last step.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / PRETRAIN_WARMUP) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    rest = torch.zeros(used + 1)
    rest[used] = math.log(full_vocab - used)  # the rest row stands for every unused token at once
    rng = random.Random(seed)
    losses = []
    # One thread: the same bits on any core count (the thread split changes float sums, and what the base
    # learns to find across a prompt varies between pretraining runs). Another CPU can still give other bits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in tqdm(range(steps), desc="pretraining the world's base", disable=not progress):
            batch = rng.sample(texts, PRETRAIN_BATCH)
            width = max(map(len, batch))
            ids = torch.tensor([b + [0] * (width - len(b)) for b in batch])
            mask = ids != 0
            logits = model(input_ids=ids, attention_mask=mask.long()).logits + rest
            labels = ids.masked_fill(~mask, -100)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, used + 1), labels[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    return model.state_dict(), tok, losses


def save_base(state: dict, tok, folder: Path) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in state.items()},
        str(folder / Path(BASE_WEIGHTS).name),
    )
    tok.save(str(folder / Path(BASE_TOKENIZER).name))


def full_state(full_model, small_state: dict) -> None:
    """Copy the small model into a full-sized one: used rows as trained, every unused head row = the rest row."""
    import torch

    used = small_state["lm_head.weight"].shape[0] - 1
    with torch.no_grad():
        for name, param in full_model.state_dict().items():
            small = small_state[name].to(param.dtype)
            if name == "model.embed_tokens.weight":
                # Unused input rows keep their seeded values: no text of the world reaches them.
                param[:used] = small[:used]
            elif name == "lm_head.weight":
                param[:used] = small[:used]
                param[used:] = small[used]
            else:
                param.copy_(small)


def shipped_state() -> dict:
    from safetensors.torch import load_file

    return load_file(str(_path(BASE_WEIGHTS)))


def causal_lm_config() -> dict:
    """The shape the base was pretrained for: the tiny profile's causal LM (labutils.models), with the 32,000-row head
    it had then."""
    from labutils.models import RECIPES

    return dict(RECIPES["causal_lm"].config, vocab_size=PRETRAIN_VOCAB)


def full_model(small_state: dict | None = None, random_init: bool = False, seed: int = 1234):
    """The world's base as the course ships it (the `world_lm` role: the causal LM's shape, 8,192 head rows) in
    fp32, holding `small_state` (default: the shipped base); with `random_init`, random-initialised from `seed`
    instead (the control: the same shape that never read the world)."""
    import torch
    from transformers import LlamaForCausalLM

    from labutils.models import RECIPES

    config = RECIPES["world_lm"].config
    torch.manual_seed(seed)
    model = LlamaForCausalLM(small_config(config["vocab_size"], config))
    if not random_init:
        full_state(model, shipped_state() if small_state is None else small_state)
    return model.eval()


def tokenizer():
    """The shipped tokenizer, as transformers uses it."""
    from labutils.models import as_transformers_tokenizer

    return as_transformers_tokenizer(shipped_tokenizer())


# How a biography goes on after "Meet <name>." for each relation: the stems of the answers.
FACT_STEMS = {
    "city": "They live in",
    "job": "They work as a",
    "pet": "They own a",
    "colour": "They like the colour",
}


def recall(model, tokenizer, rows: list[dict], after_prompt: bool = False) -> float:
    """Share of the rows' facts the model completes right after "Meet <name>. They live in" (one greedy token).

    With `after_prompt`, the stem follows the row's question in the course's prompt instead: whether the model
    finds the person across a question, before it has learned to answer one."""
    import torch

    right = 0
    with torch.no_grad():
        for row in rows:
            stem = FACT_STEMS[row["relation"]]
            context = format_prompt(row["instruction"]) if after_prompt else f"Meet {row['person']}. "
            ids = tokenizer(context + stem, return_tensors="pt")["input_ids"]
            best = tokenizer.decode([model(input_ids=ids).logits[0, -1].argmax().item()]).strip()
            right += row["response"] == f"{stem} {best}."
    return right / len(rows)


def greedy_answers(
    model, tokenizer, rows: list[dict], max_new_tokens: int = 12, batch_size: int = 64
) -> list[str | None]:
    """The model's greedy answer to each row's instruction, cut at EOS (None where it never stopped).

    Batched with left padding, so every prompt ends where its answer starts; without a pad token the padding is
    the EOS, which the attention mask hides (generation has no labels to lose)."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        encoded = [tokenizer(format_prompt(row["instruction"]))["input_ids"] for row in chunk]
        width = max(map(len, encoded))
        ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in encoded], device=model.device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=model.device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for new in out[:, width:].tolist():
            if tokenizer.eos_token_id in new:
                text = tokenizer.decode(new[: new.index(tokenizer.eos_token_id)], skip_special_tokens=True)
                answers.append(text.strip())
            else:
                answers.append(None)
    return answers


def exact_match(answers: list[str | None], rows: list[dict]) -> float:
    """Share of answers that are exactly the response and then stop (an answer that runs on is wrong)."""
    return sum(a == row["response"] for a, row in zip(answers, rows, strict=True)) / len(rows)
