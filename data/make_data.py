"""Generate the course data sets: a tiny instruction-tuning set and a tiny sentiment set.

Everything is synthetic and templated, built from small word lists with `random.Random(SEED)`, so:
  * no download is needed (the labs run offline),
  * running the script twice writes byte-identical files (tests compare them with the committed copies),
  * a 2-layer random-initialised model with LoRA can visibly learn the patterns in a few dozen steps.

Usage:  python data/make_data.py [--out DIR] [--seed N]
(paths default to the folder holding this script, whatever the current directory).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

SEED = 1234
HERE = Path(__file__).resolve().parent

# Per task: 40 train + 5 validation examples, 8 tasks -> 320 / 40.
INSTRUCTION_TRAIN_PER_TASK = 40
INSTRUCTION_VALIDATION_PER_TASK = 5
# Per label: 160 train + 20 validation rows -> 320 / 40, exactly balanced.
SENTIMENT_TRAIN_PER_LABEL = 160
SENTIMENT_VALIDATION_PER_LABEL = 20

# ---------------------------------------------------------------------------------------------------------
# Instruction set. One small shared vocabulary keeps the tokenizer and the model's job small.
# ---------------------------------------------------------------------------------------------------------
NOUNS = ("cat", "dog", "bird", "fish", "tree", "book", "cup", "hat", "ball", "car", "box", "star")
ADJECTIVES = ("red", "blue", "green", "big", "small", "old", "new", "happy", "fast", "slow", "warm", "cold")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

OPPOSITES = (
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("day", "night"),
    ("open", "closed"),
    ("happy", "sad"),
    ("light", "dark"),
    ("old", "new"),
    ("wet", "dry"),
    ("hard", "soft"),
    ("high", "low"),
    ("full", "empty"),
    ("early", "late"),
    ("in", "out"),
    ("left", "right"),
    ("yes", "no"),
    ("good", "bad"),
    ("rich", "poor"),
    ("long", "short"),
    ("loud", "quiet"),
    ("near", "far"),
    ("strong", "weak"),
    ("win", "lose"),
)

# Mostly regular plurals (the learnable rule: add "s"), a few "-es", "-ies" and irregular ones.
PLURALS = (
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("tree", "trees"),
    ("book", "books"),
    ("cup", "cups"),
    ("hat", "hats"),
    ("ball", "balls"),
    ("car", "cars"),
    ("star", "stars"),
    ("pen", "pens"),
    ("key", "keys"),
    ("door", "doors"),
    ("frog", "frogs"),
    ("lamp", "lamps"),
    ("ship", "ships"),
    ("shoe", "shoes"),
    ("coat", "coats"),
    ("bag", "bags"),
    ("bed", "beds"),
    ("chair", "chairs"),
    ("table", "tables"),
    ("apple", "apples"),
    ("egg", "eggs"),
    ("cake", "cakes"),
    ("road", "roads"),
    ("hill", "hills"),
    ("river", "rivers"),
    ("song", "songs"),
    ("game", "games"),
    ("box", "boxes"),
    ("bus", "buses"),
    ("fox", "foxes"),
    ("dish", "dishes"),
    ("glass", "glasses"),
    ("brush", "brushes"),
    ("city", "cities"),
    ("baby", "babies"),
    ("story", "stories"),
    ("party", "parties"),
    ("man", "men"),
    ("woman", "women"),
    ("child", "children"),
    ("mouse", "mice"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("goose", "geese"),
    ("sheep", "sheep"),
)


def _task_uppercase(rng: random.Random) -> tuple[str, str]:
    phrase = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return f"Write in capitals: {phrase}", phrase.upper()


def _task_reverse(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(NOUNS, rng.choice((3, 4)))
    return f"Reverse the list: {' '.join(words)}", " ".join(reversed(words))


def _task_add(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(10), rng.randrange(10)
    return f"What is {a} plus {b}?", str(a + b)


def _task_larger(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(range(1, 21), 2)
    return f"Which is larger, {a} or {b}?", str(max(a, b))


def _task_next(rng: random.Random) -> tuple[str, str]:
    n = rng.randrange(50)
    return f"What number comes after {n}?", str(n + 1)


def _task_count(rng: random.Random) -> tuple[str, str]:
    k = rng.randint(2, 6)
    items = [rng.choice(NOUNS[:6]) for _ in range(k)]
    # The answer is a number word, so "count" has an output vocabulary distinct from the arithmetic tasks.
    return f"Count the items: {', '.join(items)}", NUMBER_WORDS[k]


def _table_task(pairs: tuple[tuple[str, str], ...], template: str) -> Callable[[random.Random], list]:
    """A task over a fixed table: every entry once, in a seeded order (no sampling with replacement)."""

    def examples(rng: random.Random) -> list[tuple[str, str]]:
        rows = [(template.format(word=a), b) for a, b in pairs]
        rng.shuffle(rows)
        return rows

    return examples


_OPPOSITE_BOTH_WAYS = OPPOSITES + tuple((b, a) for a, b in OPPOSITES)

# task name -> generator. A generator of one random example is sampled until enough unique instructions
# exist; a table task returns all its (already unique) examples at once.
SAMPLED_TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "uppercase": _task_uppercase,
    "reverse": _task_reverse,
    "add": _task_add,
    "larger": _task_larger,
    "next_number": _task_next,
    "count": _task_count,
}
TABLE_TASKS: dict[str, Callable[[random.Random], list]] = {
    "opposite": _table_task(_OPPOSITE_BOTH_WAYS, "What is the opposite of {word}?"),
    "plural": _table_task(PLURALS, "What is the plural of {word}?"),
}


def _unique_examples(task: str, rng: random.Random, n: int) -> list[tuple[str, str]]:
    if task in TABLE_TASKS:
        rows = TABLE_TASKS[task](rng)
        if len(rows) < n:
            raise ValueError(f"task {task!r} has only {len(rows)} entries, {n} needed")
        return rows[:n]
    seen: dict[str, str] = {}
    for _ in range(100 * n):  # a bound, so a too-small template space fails loudly instead of looping
        instruction, response = SAMPLED_TASKS[task](rng)
        seen.setdefault(instruction, response)
        if len(seen) == n:
            return list(seen.items())
    raise ValueError(f"task {task!r} could not produce {n} unique instructions")


def make_instructions(rng: random.Random) -> dict[str, list[dict[str, str]]]:
    """Train/validation splits, stratified by task, with no instruction in both splits."""
    n_train, n_val = INSTRUCTION_TRAIN_PER_TASK, INSTRUCTION_VALIDATION_PER_TASK
    splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": []}
    for task in (*SAMPLED_TASKS, *TABLE_TASKS):
        rows = [
            {"instruction": ins, "response": resp, "task": task}
            for ins, resp in _unique_examples(task, rng, n_train + n_val)
        ]
        splits["train"] += rows[:n_train]
        splits["validation"] += rows[n_train:]
    for rows in splits.values():
        rng.shuffle(rows)  # interleave tasks so every batch mixes them
    return splits


# ---------------------------------------------------------------------------------------------------------
# Sentiment set. The label is carried by a few polar adjectives; the rest is neutral filler, so a tiny
# classifier learns it from keywords.
# ---------------------------------------------------------------------------------------------------------
PRODUCT_PARTS = ("battery", "screen", "camera", "keyboard", "speaker", "charger", "case", "strap", "remote")
MOVIE_PARTS = ("plot", "acting", "ending", "soundtrack", "dialogue", "pacing", "cast", "script", "music")
POSITIVE = (
    "great",
    "excellent",
    "wonderful",
    "amazing",
    "solid",
    "lovely",
    "brilliant",
    "superb",
    "fantastic",
    "reliable",
)
NEGATIVE = (
    "awful",
    "terrible",
    "poor",
    "cheap",
    "broken",
    "boring",
    "disappointing",
    "dreadful",
    "flimsy",
    "weak",
)
FILLERS = (
    "I bought it last week.",
    "We watched it on a Sunday.",
    "It came in a blue box.",
    "My brother picked it.",
    "I used it for a month.",
    "We saw it with friends.",
    "It was a gift.",
    "I tried it at home.",
)
TEMPLATES = (
    "The {p1} was {a1} and the {p2} felt {a2}.",
    "The {p1} is {a1}. {filler}",
    "{filler} The {p1} was {a1} and the {p2} was {a2}.",
    "Honestly, the {p1} felt {a1}.",
    "I found the {p1} {a1}, and the {p2} was {a2} too.",
    "{filler} Overall the {p1} seemed {a1}.",
)


def _review(rng: random.Random, words: tuple[str, ...]) -> str:
    parts = rng.choice((PRODUCT_PARTS, MOVIE_PARTS))  # never mix a battery and a plot in one review
    p1, p2 = rng.sample(parts, 2)
    a1, a2 = rng.sample(words, 2)
    return rng.choice(TEMPLATES).format(p1=p1, p2=p2, a1=a1, a2=a2, filler=rng.choice(FILLERS))


def make_sentiment(rng: random.Random) -> dict[str, list[dict[str, object]]]:
    """Train/validation splits, exactly balanced, with no duplicate text anywhere."""
    n_train, n_val = SENTIMENT_TRAIN_PER_LABEL, SENTIMENT_VALIDATION_PER_LABEL
    splits: dict[str, list[dict[str, object]]] = {"train": [], "validation": []}
    seen: set[str] = set()
    for label, words in ((0, NEGATIVE), (1, POSITIVE)):
        texts: list[str] = []
        for _ in range(100 * (n_train + n_val)):
            text = _review(rng, words)
            if text not in seen:
                seen.add(text)
                texts.append(text)
            if len(texts) == n_train + n_val:
                break
        else:
            raise ValueError(f"could not produce {n_train + n_val} unique reviews for label {label}")
        splits["train"] += [{"text": t, "label": label} for t in texts[:n_train]]
        splits["validation"] += [{"text": t, "label": label} for t in texts[n_train:]]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


# ---------------------------------------------------------------------------------------------------------
# Writing. Explicit encoding and "\n" line endings, so the bytes are the same on every platform.
# ---------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------
# A small world for the pretrained base (labutils.world): people with four facts each, written as short
# biographies (the pretraining corpus) and asked about as instructions. The validation people's facts appear
# in the corpus but never in the training instructions, so answering them takes what the base learned in
# pretraining, not what LoRA memorised.
# ---------------------------------------------------------------------------------------------------------
WORLD_PEOPLE = 160
WORLD_BIOS_PER_PERSON = 12
NAME_SYLLABLES = (
    "ba",
    "ko",
    "ri",
    "ta",
    "me",
    "lo",
    "su",
    "ni",
    "da",
    "fe",
    "gu",
    "pi",
    "ra",
    "ve",
    "mo",
    "za",
)
WORLD_VALUES = {
    "city": (
        "Paris",
        "Rome",
        "Oslo",
        "Lima",
        "Cairo",
        "Delhi",
        "Tokyo",
        "Quito",
        "Dakar",
        "Riga",
        "Bern",
        "Kyiv",
    ),
    "job": (
        "baker",
        "farmer",
        "doctor",
        "pilot",
        "teacher",
        "singer",
        "painter",
        "tailor",
        "sailor",
        "miner",
    ),
    "pet": ("cat", "dog", "parrot", "horse", "rabbit", "goat", "turtle", "hamster"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
}
# Two ways of writing a fact: with the name, and (after an introduction) with "they", so the base learns to
# find the person a passage is about however far back the name is, which is what answering a question takes.
NAMED_FACTS = {
    "city": (
        "{n} lives in {v}.",
        "{n} has a house in {v}.",
        "The home of {n} is in {v}.",
        "{n} moved to {v} long ago.",
    ),
    "job": (
        "{n} works as a {v}.",
        "{n} is a {v} by trade.",
        "By day, {n} is a {v}.",
        "{n} earns a living as a {v}.",
    ),
    "pet": (
        "{n} keeps a {v} at home.",
        "{n} owns a {v}.",
        "The pet of {n} is a {v}.",
        "{n} walks a {v} every morning.",
    ),
    "colour": (
        "{n} likes the colour {v}.",
        "The favourite colour of {n} is {v}.",
        "{n} always wears {v}.",
        "{n} paints everything {v}.",
    ),
}
THEY_FACTS = {
    "city": ("They live in {v}.", "Their home is in {v}."),
    "job": ("They work as a {v}.", "Their job is {v}."),
    "pet": ("They own a {v}.", "Their pet is a {v}."),
    "colour": ("They like the colour {v}.", "Their favourite colour is {v}."),
}
INTRODUCTIONS = ("{n} is from our village.", "This is the story of {n}.", "Meet {n}.", "Everyone knows {n}.")
# Village talk with no name in it, which sits between an introduction and the facts: the base learns to find the
# person across other text, as it must across a prompt's question and "### Response:". Its questions use the
# prompts' words, so no token of a prompt is one the base never read.
CHATTER = (
    "It rained all week.",
    "The market opens early.",
    "Nobody remembers the old bridge.",
    "Which road leads to the river? The long one.",
    "What is the best job? Everyone says their own.",
    "What pet does the miller have? Nobody is sure.",
    "Which colour is the sky today? Grey.",
    "What is the job of a sailor? To sail the sea.",
    "Which city does the train go to? Every one of them.",
    "The winter was long that year.",
    "Ask anyone in the square.",
    "What colour does the sea have? Blue, mostly.",
    "The village has one well.",
    "Some say the hills are older than the river.",
)
# Half the passages sit under a header line of the kind the prompts use, and half of those that go on with
# "they" have one between the introduction and the facts. What follows a header is always a whole biography,
# never one answer and an end of text, so the base reads the markers but does not learn to answer.
HEADERS = ("### Notes:", "### Record:", "### Story:", "### Instruction:", "### Response:")
WORLD_QUESTIONS = {
    "city": ("Which city does {n} live in?", "They live in {v}."),
    "job": ("What is the job of {n}?", "They work as a {v}."),
    "pet": ("What pet does {n} have?", "They own a {v}."),
    "colour": ("What colour does {n} like?", "They like the colour {v}."),
}


def _biography(name: str, facts: dict[str, str], rng: random.Random) -> str:
    relations = list(facts)
    rng.shuffle(relations)
    if rng.random() < 0.5:
        text = " ".join(rng.choice(NAMED_FACTS[r]).format(n=name, v=facts[r]) for r in relations)
    else:
        text = " ".join([rng.choice(INTRODUCTIONS).format(n=name), *rng.sample(CHATTER, rng.randint(0, 2))])
        # Half of these put a header line between the person and the facts, as a prompt does.
        text += "\n" + rng.choice(HEADERS) + "\n" if rng.random() < 0.5 else " "
        text += " ".join(rng.choice(THEY_FACTS[r]).format(v=facts[r]) for r in relations)
    if rng.random() < 0.5:
        text = rng.choice(HEADERS) + "\n" + text
    return text


def make_world(rng: random.Random) -> dict[str, list]:
    """The corpus (biographies, shuffled) and the instruction splits over disjoint halves of the people."""
    names = sorted({a + b for a in NAME_SYLLABLES for b in NAME_SYLLABLES if a != b})
    names = [n.capitalize() for n in rng.sample(names, WORLD_PEOPLE)]
    people = {n: {r: rng.choice(values) for r, values in WORLD_VALUES.items()} for n in names}
    corpus = [_biography(n, facts, rng) for n, facts in people.items() for _ in range(WORLD_BIOS_PER_PERSON)]
    rng.shuffle(corpus)
    half = WORLD_PEOPLE // 2
    splits: dict[str, list] = {"corpus": corpus, "train": [], "validation": []}
    for split, group in (("train", names[:half]), ("validation", names[half:])):
        for n in group:
            for relation, (question, answer) in WORLD_QUESTIONS.items():
                splits[split].append(
                    {
                        "instruction": question.format(n=n),
                        "response": answer.format(v=people[n][relation]),
                        "person": n,
                        "relation": relation,
                    }
                )
        rng.shuffle(splits[split])
    return splits


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(out_dir: str | Path | None = None, seed: int = SEED) -> dict[str, Path]:
    """Write every data file under `out_dir` (default: this script's folder); return {name: path}."""
    out = Path(out_dir) if out_dir is not None else HERE
    # One generator per set, so changing one set never reshuffles the other.
    instructions = make_instructions(random.Random(f"{seed}-instructions"))
    sentiment = make_sentiment(random.Random(f"{seed}-sentiment"))
    world = make_world(random.Random(f"{seed}-world"))

    written: dict[str, Path] = {}
    for split, rows in instructions.items():
        path = out / "instructions" / f"{split}.jsonl"
        _write_jsonl(path, rows)
        written[f"instructions/{split}"] = path
        tasks = ", ".join(f"{t}={c}" for t, c in sorted(Counter(r["task"] for r in rows).items()))
        print(f"wrote {path}: {len(rows)} examples ({tasks})")
    for split, rows in sentiment.items():
        path = out / "sentiment" / f"{split}.csv"
        _write_csv(path, rows)
        written[f"sentiment/{split}"] = path
        labels = Counter(r["label"] for r in rows)
        print(f"wrote {path}: {len(rows)} rows (negative={labels[0]}, positive={labels[1]})")
    corpus = out / "world" / "corpus.txt"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    # Passages may span two lines (a header, then the biography): a blank line separates them.
    corpus.write_text("\n\n".join(world["corpus"]) + "\n", encoding="utf-8")
    written["world/corpus"] = corpus
    print(f"wrote {corpus}: {len(world['corpus'])} biographies of {WORLD_PEOPLE} people")
    for split in ("train", "validation"):
        path = out / "world" / f"{split}.jsonl"
        _write_jsonl(path, world[split])
        written[f"world/{split}"] = path
        print(f"wrote {path}: {len(world[split])} questions about {len(world[split]) // 4} people")
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: the folder of this script)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default: {SEED})")
    args = parser.parse_args()
    main(args.out, args.seed)
