"""The course data sets: where they live, how to load them, and how an instruction becomes a prompt.

Two small synthetic sets ship in the repository's `data/` folder (made by `data/make_data.py`, described
in `data/README.md`):

* instructions: `{"instruction", "response", "task"}` rows for instruction tuning a causal LM;
* sentiment: `text,label` rows (0 = negative, 1 = positive) for sequence classification.

Set PEFT_COURSE_DATA to use a copy elsewhere (e.g. when labutils is installed without a clone).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from labutils.errors import CourseError

if TYPE_CHECKING:  # importing datasets takes seconds; only the loaders need it, so they import it lazily
    import datasets

DATA_DIR_VAR = "PEFT_COURSE_DATA"
LABEL_NAMES = ("negative", "positive")
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n### Response:\n"
SPLITS = ("train", "validation")

# The data files, relative to data_dir(). Fixed names (not a glob) so a stray file never changes a load.
INSTRUCTION_FILES = {split: f"instructions/{split}.jsonl" for split in SPLITS}
SENTIMENT_FILES = {split: f"sentiment/{split}.csv" for split in SPLITS}
DATA_FILES = (*INSTRUCTION_FILES.values(), *SENTIMENT_FILES.values())

_REGENERATE = "regenerate them with `python data/make_data.py`"


def data_dir() -> Path:
    """The folder holding the data sets: $PEFT_COURSE_DATA if set, else the clone's `data/`, else the copy
    an installed wheel carries."""
    override = os.environ.get(DATA_DIR_VAR, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise CourseError(
                f"{DATA_DIR_VAR}={override!r} is not a folder. Point it at a copy of the course's data/ "
                f"folder, or unset it to use the repository's data/."
            )
        return path
    # In a clone (or a learner bundle), src/labutils/data.py -> parents[2] is the root holding data/; a
    # wheel installed without a clone carries the data under <prefix>/share/peft-course/data.
    clone = Path(__file__).resolve().parents[2] / "data"
    installed = Path(sysconfig.get_path("data")) / "share" / "peft-course" / "data"
    for path in (clone, installed):
        if (path / INSTRUCTION_FILES["train"]).is_file():
            return path
    raise CourseError(
        f"The course data folder was not found at {clone} or {installed}. Set {DATA_DIR_VAR} to a copy of "
        f"the repository's data/ folder, or install the course (pip install -e . in a clone)."
    )


def _data_files(relative: dict[str, str]) -> dict[str, str]:
    """Absolute paths of one set's files, with a readable error when one is missing."""
    root = data_dir()
    files = {split: root / rel for split, rel in relative.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise CourseError(f"Missing course data file(s): {', '.join(missing)}; {_REGENERATE}.")
    return {split: str(p) for split, p in files.items()}


def load_instructions() -> datasets.DatasetDict:
    """The instruction set as a DatasetDict with `train` and `validation` splits."""
    import datasets

    return datasets.load_dataset("json", data_files=_data_files(INSTRUCTION_FILES))


def load_world_questions() -> datasets.DatasetDict:
    """Questions about the people of the course's small world (labutils.world), `train` and `validation` split
    by person: the base model read every person's facts in pretraining, the training questions never name a
    validation person. Columns: instruction, response, person, relation."""
    import datasets

    from labutils.world import WORLD_FILES

    return datasets.load_dataset(
        "json", data_files=_data_files({split: WORLD_FILES[split] for split in SPLITS})
    )


def load_sentiment() -> datasets.DatasetDict:
    """The sentiment set as a DatasetDict with `train`/`validation`; `label` is a ClassLabel."""
    import datasets

    # Explicit features: `text` stays a string whatever pandas would infer, and `label` carries its names,
    # so `ds.features["label"].int2str` and a model's id2label come from one place.
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABEL_NAMES))}
    )
    return datasets.load_dataset("csv", data_files=_data_files(SENTIMENT_FILES), features=features)


def format_prompt(instruction: str) -> str:
    """The prompt alone, ending where the model should start answering (for generation)."""
    return PROMPT_TEMPLATE.format(instruction=instruction)


def format_instruction(example: dict, eos_token: str = "") -> str:
    """Prompt + response (+ eos_token): one training text. The EOS teaches the model to stop."""
    return format_prompt(example["instruction"]) + example["response"] + eos_token


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def corpus_texts() -> list[str]:
    """Every text of both sets, all splits, in file order: the corpus for the course tokenizer.

    Read with the standard library (not `datasets`) so building the tokenizer is fast and writes no cache.
    Instructions appear formatted with the prompt template, so its markers become tokens too.
    """
    instruction_files = _data_files(INSTRUCTION_FILES)
    sentiment_files = _data_files(SENTIMENT_FILES)
    texts: list[str] = []
    for split in SPLITS:
        texts += [format_instruction(row) for row in _read_jsonl(Path(instruction_files[split]))]
    for split in SPLITS:
        texts += [row["text"] for row in _read_csv(Path(sentiment_files[split]))]
    return texts


def data_fingerprint(files: tuple[str, ...] = DATA_FILES) -> str:
    """sha256 hex over data files (sorted by path; name and bytes), to key caches of trained models."""
    _data_files(dict(enumerate(files)))  # a readable error, not a FileNotFoundError, if a file is missing
    root = data_dir()
    digest = hashlib.sha256()
    for rel in sorted(files):
        data = (root / rel).read_bytes()
        # Name and length go in too, so moving bytes between files or swapping files changes the digest.
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
