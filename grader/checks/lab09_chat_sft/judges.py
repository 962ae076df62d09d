"""Lab 09's judges: chat tokens, the template's mask, the LoRA config, the trainer's labels, the saved folder and
generation from it, each from its record; the lab's rule titles. The Trainer's precision: checks.hardware.
"""

from __future__ import annotations

from checks import TRAINABLE_SHARE, fail
from checks.hardware import precision_flags
from checks.inspect_model import config_as_asked, leaf
from checks.lab04_qlora.judges import LLAMA_FIX
from labutils.facts import LLAMA_ATTENTION

__all__ = ["precision_flags"]  # test_precision's judge, shared with the capstone


TOKENS_RULE = "Chat tokens: the role markers as special tokens, and a pad token that is not EOS"


TEMPLATE_RULE = "A chat template for assistant-only loss: the reply and its EOS inside {% generation %}"


NEW_TOKENS_RULE = "Train new tokens with trainable_token_indices, not whole embeddings in modules_to_save"


LABELS_RULE = "SFT labels: the prompt masked (-100), the reply and its EOS kept, so the model learns to stop"


STOPS_RULE = "A chat model trained with its EOS labelled stops generating after its answer"


CHAT_MARKERS = ("<|user|>", "<|assistant|>")


TOKENS_FIX = (
    "tokenizer.add_special_tokens({'additional_special_tokens': ['<|user|>', '<|assistant|>']}); and if "
    "tokenizer.pad_token is None or is the EOS, tokenizer.add_special_tokens({'pad_token': '<|pad|>'})."
)


TEMPLATE_FIX = "end the assistant's turn with \"{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}\"."


MAX_CHAT_SHARE = 0.01  # LoRA on q/k/v/o plus two token rows: 0.95% here; whole embeddings: over 90%


def chat_tokens(record: dict) -> None:
    """Both role markers are single special tokens, and padding has a token of its own."""
    for marker in CHAT_MARKERS:
        got = record["markers"][marker]
        if got["pieces"] != 1 or not got["special"]:
            fail(
                TOKENS_RULE,
                f"{marker} is {got['pieces']} tokens{'' if got['special'] else ', not a special token'}: "
                "as plain text a role marker is split into pieces the model can also meet in ordinary text, "
                "and a template's structure is not one learnable symbol.",
                TOKENS_FIX,
            )
    if record["pad_id"] is None or record["pad_id"] == record["eos_id"]:
        found = (
            "the tokenizer has no pad token."
            if record["pad_id"] is None
            else f"the pad token is the EOS ({record['eos_token']!r}, id {record['eos_id']})."
        )
        fail(
            TOKENS_RULE,
            found
            + " Any collator that masks padding by its id (transformers' DataCollatorForLanguageModeling, "
            "many training scripts) then turns every EOS label into -100: the model never learns to stop.",
            TOKENS_FIX,
        )
    if not record["new_ids_match"]:
        fail(
            TOKENS_RULE,
            f"new_token_ids is {record['new_token_ids']!r}, not the ids of {list(CHAT_MARKERS)} "
            f"({record['marker_ids']}).",
            "new_token_ids = tokenizer.convert_tokens_to_ids(['<|user|>', '<|assistant|>']).",
        )


def chat_template_mask(record: dict) -> None:
    """On a two-turn conversation the assistant mask covers each reply and its EOS, nothing of the prompt,
    and the generation prompt renders the assistant's header as training saw it."""
    if record["error"]:
        fail(
            TEMPLATE_RULE,
            f"the chat template does not render a conversation: {record['error']}.",
            TEMPLATE_FIX,
        )
    if not all(record["markers_used"].values()):
        missing = [m for m, used in record["markers_used"].items() if not used]
        fail(
            TEMPLATE_RULE,
            f"the rendered conversation does not contain {missing} as tokens.",
            "start each turn with its marker: <|user|> before the user's words, <|assistant|> before the reply.",
        )
    if not record["masked"]:
        fail(
            TEMPLATE_RULE,
            "the template has no {% generation %} block: the assistant mask is empty, so assistant_only_loss "
            "has nothing to train on.",
            TEMPLATE_FIX,
        )
    if record["prompt_masked_in"]:
        fail(
            TEMPLATE_RULE,
            f"the generation block holds words of the prompt ({record['prompt_masked_in']}): the loss would "
            "train the model to write the user's side too.",
            "open {% generation %} after the assistant's header, close it after the EOS.",
        )
    if record["replies_in_mask"] < record["turns"]:
        fail(
            TEMPLATE_RULE,
            f"only {record['replies_in_mask']} of the {record['turns']} replies are inside the generation block.",
            TEMPLATE_FIX,
        )
    if record["eos_in_mask"] < record["turns"]:
        where = "is not in the template" if not record["eos_rendered"] else "is outside the generation block"
        fail(
            TEMPLATE_RULE,
            f"the EOS after the assistant's reply {where}: with assistant-only loss its label is -100, so the "
            "model never learns to stop (TRL warns, and the training loss still looks healthy).",
            TEMPLATE_FIX,
        )
    if not record["generation_prompt_prefix"]:
        fail(
            TEMPLATE_RULE,
            "add_generation_prompt=True does not render the start of the assistant's turn as the training "
            f"text has it (rendered: {record['generation_prompt']!r}).",
            "{% if add_generation_prompt %}<|assistant|>\\n{% endif %}, exactly the header the replies follow.",
        )


def chat_lora(record: dict) -> None:
    """lora_config, applied to a fresh base: LoRA (r=16, alpha=32, a causal LM's task type) on the attention
    projections, the new tokens' rows trainable through trainable_token_indices, no whole embedding or output
    layer, a share under 1%."""
    whole = [
        n for n in record["whole_modules"] if leaf(n) in ("embed_tokens", "lm_head", "embed_in", "embed_out")
    ]
    if whole:
        fail(
            NEW_TOKENS_RULE,
            f"modules_to_save={record['modules_to_save']!r} trains and saves the whole "
            f"{' and '.join(sorted({leaf(n) for n in whole}))}: {record['share']:.1%} of the model trains, "
            "and every saved adapter carries full copies of them (hundreds of MB on a real model) to teach "
            "the model two new tokens.",
            "trainable_token_indices={'embed_tokens': new_token_ids}: only those rows train and are saved.",
        )
    untrained = sorted(set(record["new_ids"]) - set(record["token_rows"]))
    if untrained:
        fail(
            NEW_TOKENS_RULE,
            f"the new tokens {untrained} are not trainable: their embeddings stay at the values the "
            "tokenizer's new ids happened to get (random rows), frozen, so the model cannot learn what "
            "<|user|> and <|assistant|> mean.",
            "LoraConfig(..., trainable_token_indices={'embed_tokens': new_token_ids}).",
        )
    missing = sorted(set(LLAMA_ATTENTION) - set(record["lora_leaves"]))
    if missing:
        fail(
            1,
            f"LoRA is not on {missing} (it wraps {record['lora_leaves'] or 'nothing'}).",
            LLAMA_FIX,
        )
    config_as_asked(record["config"], "lora_config", 16, 32, "CAUSAL_LM")
    if record["share"] >= MAX_CHAT_SHARE:
        fail(
            TRAINABLE_SHARE,
            f"{record['share']:.2%} of the model trains.",
            "r=16 on the attention projections and only the new tokens' rows: about 0.95% here.",
        )


def sft_labels(record: dict) -> None:
    """In the batches the trainer really builds: no prompt token labelled, each reply and its EOS kept."""
    n = record["examples"]
    if not n:
        fail(LABELS_RULE, "the trainer's training set is empty.", "pass train_dataset=train_chat.")
    if record["no_marker"] == n:
        fail(
            LABELS_RULE,
            "the trainer's sequences contain no <|assistant|> token: the training data is not rendered with "
            "the chat template.",
            "pass the conversational data (train_chat) and processing_class=tokenizer to SFTTrainer.",
        )
    if record["prompt_labelled"]:
        fail(
            LABELS_RULE,
            f"in {record['prompt_labelled']} of {n} sequences prompt tokens carry labels: the loss trains the "
            "model to reproduce the user's words and the template, and the reply is a small part of it.",
            "SFTConfig(assistant_only_loss=True) for messages (or prompt/completion data, whose completion-only "
            "loss is the default).",
        )
    if record["eos_missing"]:
        fail(
            LABELS_RULE,
            f"{record['eos_missing']} of {n} sequences have no EOS after the reply (cut by max_length, or "
            "never rendered): there is nothing to learn to stop at.",
            "max_length=64 and a template that ends each reply with {{ eos_token }}.",
        )
    if record["eos_kept"] < n:
        fail(
            LABELS_RULE,
            f"the EOS after the reply is labelled -100 in {n - record['eos_kept']} of {n} sequences: it is "
            "masked from the loss (outside the template's generation block, or a collator that masks the "
            "pad id while pad = EOS), so the model never learns to stop.",
            "keep the EOS inside {% generation %}, a pad token of its own, and SFTTrainer's own collator.",
        )
    if record["reply_labelled"] < n:
        fail(
            LABELS_RULE,
            f"only {record['reply_labelled']} of {n} sequences have their reply labelled.",
            "assistant_only_loss=True with a template whose generation block holds the reply.",
        )


def chat_adapter_files(record: dict) -> None:
    """The saved adapter: LoRA tensors and the new tokens' rows only, and the tokenizer that renders its
    prompts beside it."""
    if record["whole_tensors"]:
        fail(
            NEW_TOKENS_RULE,
            f"the adapter file holds whole layers ({', '.join(record['whole_tensors'][:2])}; "
            f"{record['adapter_mb']:.1f} MB): embeddings saved whole, because they were in modules_to_save or "
            "because peft saves resized embeddings by default.",
            "trainable_token_indices for the new tokens, and "
            "trainer.model.save_pretrained(ADAPTER_DIR, save_embedding_layers=False).",
        )
    if not record["tokenizer_saved"]:
        fail(
            TOKENS_RULE,
            f"no tokenizer with {list(CHAT_MARKERS)} and the chat template is saved in the adapter folder: "
            "whoever loads the adapter cannot build the prompts it was trained on.",
            "tokenizer.save_pretrained(ADAPTER_DIR) (trainer.save_model saves it too).",
        )
    if not record["template_saved"]:
        fail(
            TEMPLATE_RULE,
            "the tokenizer saved with the adapter has no chat template.",
            "set tokenizer.chat_template before tokenizer.save_pretrained(ADAPTER_DIR).",
        )


MIN_STOPPED = 0.5  # trained with its EOS labelled: 10 of 10 prompts stop here; with it masked: 0 of 10


def chat_stops(record: dict) -> None:
    """Loaded from its folder, the trained adapter ends most answers with EOS."""
    if record["stopped"] < MIN_STOPPED * record["prompts"]:
        fail(
            STOPS_RULE,
            f"loaded from the adapter folder, the model ran to the {record['max_new_tokens']}-token limit on "
            f"{record['prompts'] - record['stopped']} of {record['prompts']} validation prompts (e.g. "
            f"{record['example']!r}), and predicts EOS after {record['eos_after_reply']} of "
            f"{record['replies']} reference replies: EOS was never a label it learned.",
            "keep each reply's EOS in the loss: {{ eos_token }} inside {% generation %}, and a pad token that "
            "is not the EOS.",
        )
