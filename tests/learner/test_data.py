"""The course data sets: the generator reproduces the committed files, and labutils.data loads them."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from labutils import data, world
from labutils.errors import CourseError

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
# Everything data/make_data.py writes: the two course sets and the world of the pretrained base.
GENERATED = (*data.DATA_FILES, *world.WORLD_FILES.values())


def _load_make_data():
    # data/ is not a package; load the script as a module so tests can call main(out_dir=...).
    spec = importlib.util.spec_from_file_location("make_data", DATA / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(autouse=True)
def _repo_data(monkeypatch):
    # Tests start from the repository's data/, whatever the developer's shell exports.
    monkeypatch.delenv(data.DATA_DIR_VAR, raising=False)


@pytest.fixture
def data_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the data files in a tmp folder, selected through the environment variable."""
    copy = tmp_path / "data"
    for rel in data.DATA_FILES:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DATA / rel, copy / rel)
    monkeypatch.setenv(data.DATA_DIR_VAR, str(copy))
    return copy


# --- the generator --------------------------------------------------------------------------------------


def test_generator_reproduces_committed_files(tmp_path, capsys):
    written = _load_make_data().main(out_dir=tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in written.values()) == sorted(GENERATED)
    for rel in GENERATED:
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), (
            f"data/{rel} is not what data/make_data.py writes; rerun it and commit the result"
        )
    out = capsys.readouterr().out
    assert "negative=160, positive=160" in out and "320 examples" in out


def test_generator_cli_runs_from_any_cwd(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(DATA / "make_data.py"), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.count("wrote ") == len(GENERATED)
    for rel in GENERATED:
        assert (out / rel).read_bytes() == (DATA / rel).read_bytes()


# --- the committed files ---------------------------------------------------------------------------------


def test_instruction_files_shape():
    splits = {s: _jsonl(DATA / data.INSTRUCTION_FILES[s]) for s in data.SPLITS}
    assert sum(len(rows) for rows in splits.values()) >= 300
    assert len(splits["train"]) > len(splits["validation"]) > 0
    tasks = {s: Counter(r["task"] for r in rows) for s, rows in splits.items()}
    assert set(tasks["train"]) == set(tasks["validation"]) and len(tasks["train"]) >= 5
    for rows in splits.values():
        for row in rows:
            assert set(row) == {"instruction", "response", "task"}
            assert all(isinstance(v, str) and v for v in row.values())
            assert len(json.dumps(row)) < 200
            assert 1 <= len(row["response"].split()) <= 8
    instructions = {s: [r["instruction"] for r in rows] for s, rows in splits.items()}
    assert all(len(set(v)) == len(v) for v in instructions.values()), "duplicate instruction in a split"
    assert not set(instructions["train"]) & set(instructions["validation"])


def test_instruction_answers_are_correct():
    # Spot-check the tasks whose answers can be recomputed from the instruction.
    for split in data.SPLITS:
        for row in _jsonl(DATA / data.INSTRUCTION_FILES[split]):
            ins, resp = row["instruction"], row["response"]
            if row["task"] == "add":
                a, b = ins.removeprefix("What is ").removesuffix("?").split(" plus ")
                assert resp == str(int(a) + int(b))
            elif row["task"] == "uppercase":
                assert resp == ins.split(": ", 1)[1].upper()
            elif row["task"] == "reverse":
                assert resp.split() == ins.split(": ", 1)[1].split()[::-1]
            elif row["task"] == "larger":
                a, b = ins.removeprefix("Which is larger, ").removesuffix("?").split(" or ")
                assert resp == str(max(int(a), int(b)))


def test_sentiment_files_balanced_and_disjoint():
    splits = {s: _csv(DATA / data.SENTIMENT_FILES[s]) for s in data.SPLITS}
    assert sum(len(rows) for rows in splits.values()) >= 300
    for rows in splits.values():
        assert rows and set(rows[0]) == {"text", "label"}
        labels = Counter(r["label"] for r in rows)
        assert set(labels) == {"0", "1"} and labels["0"] == labels["1"]
        texts = [r["text"] for r in rows]
        assert len(set(texts)) == len(texts), "duplicate review in a split"
        assert all(0 < len(t) < 200 for t in texts)
    train = {r["text"] for r in splits["train"]}
    assert not train & {r["text"] for r in splits["validation"]}


# --- the loader -----------------------------------------------------------------------------------------


def test_load_instructions():
    import datasets

    ds = data.load_instructions()
    assert isinstance(ds, datasets.DatasetDict)
    assert set(ds) == set(data.SPLITS)
    for split in data.SPLITS:
        assert ds[split].features == datasets.Features(
            {k: datasets.Value("string") for k in ("instruction", "response", "task")}
        )
        assert ds[split].num_rows == len(_jsonl(DATA / data.INSTRUCTION_FILES[split]))


def test_load_sentiment_has_class_labels():
    import datasets

    ds = data.load_sentiment()
    assert isinstance(ds, datasets.DatasetDict)
    assert set(ds) == set(data.SPLITS)
    label = ds["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel)
    assert tuple(label.names) == data.LABEL_NAMES == ("negative", "positive")
    assert ds["train"].features["text"] == datasets.Value("string")
    for split in data.SPLITS:
        rows = _csv(DATA / data.SENTIMENT_FILES[split])
        assert ds[split].num_rows == len(rows)
        assert ds[split][0] == {"text": rows[0]["text"], "label": int(rows[0]["label"])}


def test_format_instruction_and_prompt():
    example = {"instruction": "What is 3 plus 4?", "response": "7", "task": "add"}
    prompt = "### Instruction:\nWhat is 3 plus 4?\n### Response:\n"
    assert data.format_prompt(example["instruction"]) == prompt
    assert data.format_instruction(example) == prompt + "7"
    assert data.format_instruction(example, eos_token="</s>") == prompt + "7</s>"
    assert data.PROMPT_TEMPLATE.format(instruction="x") == data.format_prompt("x")


def test_corpus_texts_covers_both_sets_in_stable_order():
    texts = data.corpus_texts()
    assert texts == data.corpus_texts()
    first = _jsonl(DATA / data.INSTRUCTION_FILES["train"])[0]
    last = _csv(DATA / data.SENTIMENT_FILES["validation"])[-1]
    assert texts[0] == data.format_instruction(first)
    assert texts[-1] == last["text"]
    n_instructions = sum(len(_jsonl(DATA / f)) for f in data.INSTRUCTION_FILES.values())
    n_reviews = sum(len(_csv(DATA / f)) for f in data.SENTIMENT_FILES.values())
    assert len(texts) == n_instructions + n_reviews


# --- where the data lives -------------------------------------------------------------------------------


def test_data_dir_defaults_to_repository():
    assert data.data_dir() == DATA


def test_env_var_overrides_data_dir(data_copy):
    assert data.data_dir() == data_copy
    path = data_copy / data.SENTIMENT_FILES["validation"]
    path.write_text("text,label\nIt was great.,1\n", encoding="utf-8")
    assert data.load_sentiment()["validation"]["text"] == ["It was great."]


def test_missing_env_dir_raises_course_error(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(CourseError, match=data.DATA_DIR_VAR):
        data.data_dir()


def test_missing_repo_data_raises_course_error(tmp_path, monkeypatch):
    # As if labutils were installed outside a clone: no data/ three levels up from the module.
    monkeypatch.setattr(data, "__file__", str(tmp_path / "site-packages" / "labutils" / "data.py"))
    with pytest.raises(CourseError) as err:
        data.data_dir()
    assert data.DATA_DIR_VAR in str(err.value) and "clone" in str(err.value)


def test_missing_file_raises_course_error(data_copy):
    (data_copy / data.INSTRUCTION_FILES["validation"]).unlink()
    for func in (data.load_instructions, data.corpus_texts, data.data_fingerprint):
        with pytest.raises(CourseError, match="make_data.py"):
            func()


def test_fingerprint_changes_with_the_data(data_copy, monkeypatch):
    fingerprint = data.data_fingerprint()
    assert len(fingerprint) == 64 and fingerprint == data.data_fingerprint()
    monkeypatch.delenv(data.DATA_DIR_VAR)
    assert data.data_fingerprint() == fingerprint, "an identical copy has the same fingerprint"
    monkeypatch.setenv(data.DATA_DIR_VAR, str(data_copy))

    path = data_copy / data.SENTIMENT_FILES["train"]
    original = path.read_bytes()
    path.write_bytes(original.replace(b"great", b"grand", 1))
    assert data.data_fingerprint() != fingerprint
    path.write_bytes(original)
    assert data.data_fingerprint() == fingerprint
