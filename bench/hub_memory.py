"""Each lab's memory at hub size: predicted without a GPU or a download, measured on a GPU.

    python bench/hub_memory.py [--labs 01_lora_anatomy ...] [--budget-gb 12] [--out out/bench]
    python bench/hub_memory.py --measure      # on a CUDA machine (bench/gpu_run.sh runs it)

Every lab runs top to bottom in the hub profile (its master: reference solutions, hidden tests inline),
offline, from a Hugging Face cache seeded with the course's tiny models under the hub ids and saved in
float32, the upper bound for a hub checkpoint loaded with dtype "auto". A kernel hook takes a census of
the weights alive in the kernel after every cell and after every `from_pretrained` and every deep copy of
a model, when a model just built and the one it replaces are both alive. Each live tensor is counted
once, with the bytes per weight it really has there (float32, bfloat16, NF4's packed half byte, int8).

The census is scaled to hub size parameter by parameter: every weight of a model loaded from a hub id is
matched to its counterpart in the hub architecture, built on the meta device from the model's published
sizes (HUB_SIZES: no download), and LoRA's A and B to the hub layer they adapt. Models the hidden checks
load from local tiny checkpoints stay at their own size. The table gives each lab's peak of weights held
at once against the GPU budget (12 GB of a 15 GB T4, the rest for activations, optimizer state and CUDA's
context, which this prediction does not count), the cell where it peaks and what is held there, and an upper
bound of its CPU RAM against 9 GB of Colab's 12.7: the kernel's resident memory at every census with its tiny
weights replaced by their hub size, as if every weight stayed on the CPU (on a GPU runtime most move to the
GPU; lab 02 keeps its models on the CPU).

--measure runs the same labs on a CUDA device at hub size for real: the cache holds random-weight models
built from HUB_SIZES (no download), saved in bfloat16 as the hub checkpoints ship, and the table gives
each lab's seconds, its peak CPU RAM (the kernel's resident peak), its peak GPU memory in tensors
(torch.cuda.max_memory_allocated) and the device's peak in use (the allocator's peak reserve plus what the
device has in use beyond the reserve at any census: CUDA's context), read by the same hook.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from peft_grader import nbcourse

GB = 1e9
# Published sizes of the hub models (their config.json), so the architectures build on the meta device.
HUB_SIZES = {
    "causal_lm": dict(  # HuggingFaceTB/SmolLM2-360M: 361,821,120 parameters, its head tied to its embedding
        vocab_size=49152,
        hidden_size=960,
        intermediate_size=2560,
        num_hidden_layers=32,
        num_attention_heads=15,
        num_key_value_heads=5,
        tie_word_embeddings=True,
    ),
    "classifier": dict(  # google-bert/bert-base-uncased, with the course's two labels
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        num_labels=2,
    ),
    "gpt2": dict(
        vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024
    ),  # openai-community/gpt2
}
LAYER_INDEX = re.compile(r"\.(layers|layer|h|block)\.\d+\.")
PEFT_PARTS = re.compile(
    r"^base_model\.model\.|\.base_layer(?=\.)|\.(modules_to_save|original_module)\.default(?=\.)|\.original_module(?=\.)"
)
LORA = re.compile(r"^(?P<layer>.+)\.lora_(?P<part>[AB])\.[^.]+\.weight$")


def held_models(models: list | None = None) -> list[dict]:
    """The weights alive in this process (or in `models`), one entry per model: its class, where it was
    loaded from, and each parameter's name, shape and bytes per weight. A tensor two models share (a model
    peft wrapped in place, the inner LlamaModel of a LlamaForCausalLM) is counted once; meta tensors take
    no memory."""
    import gc

    import torch
    from transformers import PreTrainedModel

    if models is None:
        gc.collect()
        models = [o for o in gc.get_objects() if issubclass(type(o), PreTrainedModel)]  # not weak proxies
    models.sort(key=lambda m: -sum(p.numel() for p in m.parameters()))
    seen, held = set(), []
    for model in models:
        params = []
        for name, p in model.named_parameters():
            key = (p.device.type, p.untyped_storage().data_ptr())
            if p.device.type == "meta" or key in seen:
                continue
            seen.add(key)
            state = getattr(p, "quant_state", None)  # a packed 4-bit weight: bytes per logical weight
            logical = torch.Size(state.shape).numel() if state is not None else p.numel()
            params.append([name, list(p.shape), p.numel() * p.element_size() / max(logical, 1)])
        if params:
            held.append(
                {"class": type(model).__name__, "source": str(model.config._name_or_path), "params": params}
            )
    return held


# The kernel's IPython start-up: a census after every cell, every from_pretrained and every deep copy of a
# model (inside a cell, the model just built and the one it replaces are both alive for a moment).
CENSUS = textwrap.dedent(
    """
    import copy as _copy
    import json as _json
    import os as _os
    import resource as _resource
    import sys as _sys

    import torch as _torch

    _sys.path.insert(0, {bench!r})
    from hub_memory import held_models as _held_models  # noqa: E402

    _CELL = [0]


    def _rss():
        with open("/proc/self/status") as status:  # the kernel's resident memory now, in bytes
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


    def _census(event):
        peak_rss = _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss * 1024
        record = {{"event": event, "cell": _CELL[0], "rss": _rss(), "rss_peak": peak_rss}}
        if _torch.cuda.is_available():  # measured on a GPU: no census of the weights needed
            free, total = _torch.cuda.mem_get_info()
            # What the device has in use beyond the allocator's reserve: CUDA's context (and any other process).
            record.update(
                held=[],
                cuda_peak=_torch.cuda.max_memory_allocated(),
                cuda_reserved_peak=_torch.cuda.max_memory_reserved(),
                cuda_context=total - free - _torch.cuda.memory_reserved(),
            )
        else:
            record["held"] = _held_models()
        with open(_os.environ["PEFT_COURSE_CENSUS"], "a") as log:
            log.write(_json.dumps(record) + "\\n")


    def _after_cell(result):
        _census("cell")
        _CELL[0] += 1


    get_ipython().events.register("post_run_cell", _after_cell)  # noqa: F821

    import transformers.modeling_utils as _mu  # noqa: E402

    _from_pretrained = _mu.PreTrainedModel.from_pretrained.__func__


    def _loaded(cls, *args, **kwargs):
        model = _from_pretrained(cls, *args, **kwargs)
        _census("from_pretrained")
        return model


    _mu.PreTrainedModel.from_pretrained = classmethod(_loaded)
    _deepcopy = _copy.deepcopy


    def _copied(obj, *args, **kwargs):
        result = _deepcopy(obj, *args, **kwargs)
        if isinstance(obj, _torch.nn.Module) and sum(1 for _ in obj.parameters()) > 4:
            _census("deepcopy")
        return result


    _copy.deepcopy = _copied
    """
).format(bench=str(Path(__file__).resolve().parent))


def _normal(name: str) -> str:
    """One parameter's name without the layer index or peft's wrapping: the key into the hub model."""
    return LAYER_INDEX.sub(lambda m: f".{m.group(1)}.*.", PEFT_PARTS.sub("", name))


def hub_shapes() -> dict[str, tuple[dict[str, list[int]], int, int]]:
    """For each hub-size class: normalized name -> shape of one instance, hub layers, tiny layers."""
    import torch
    import transformers

    from labutils.models import RECIPES

    shapes = {}
    for role, sizes in HUB_SIZES.items():
        recipe = RECIPES[role]
        config = getattr(transformers, recipe.config_class)(**sizes)
        with torch.device("meta"):
            model = getattr(transformers, recipe.model_class)(config)
        one, seen = {}, set()
        for n, p in model.named_parameters(remove_duplicate=False):
            # A weight the hub model ties to another (SmolLM2's head is its embedding) holds nothing of its own.
            one[_normal(n)] = [0] if id(p) in seen else list(p.shape)
            seen.add(id(p))
        layers = config.num_hidden_layers
        tiny = recipe.config.get("num_hidden_layers", recipe.config.get("n_layer"))
        shapes[recipe.model_class] = (one, layers, tiny)
    return shapes


def hub_bytes(model: dict, shapes: dict, hub_ids: set[str]) -> tuple[float, float]:
    """(bytes held now, bytes at hub size) of one model in a census."""
    now = sum(_numel(shape) * per for _, shape, per in model["params"])
    if model["source"] not in hub_ids or model["class"] not in shapes:
        return now, now  # a local tiny checkpoint (the hidden checks' own models): its own size
    one, hub_layers, tiny_layers = shapes[model["class"]]
    total = 0.0
    for name, shape, per in model["params"]:
        scale = hub_layers / tiny_layers if LAYER_INDEX.search(name) else 1
        lora = LORA.match(_normal(name))
        if lora:  # A is r x in, B is out x r of the adapted layer, at hub size
            out, inp = one[lora["layer"] + ".weight"][:2]
            hub = shape[0] * inp if lora["part"] == "A" else out * shape[1]
        else:
            hub = _numel(one.get(_normal(name), shape))
        total += hub * per * scale
    return now, total


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def seed_float32_cache(cache: Path, work: Path) -> None:
    """The hub cache, holding every role's tiny model in float32 under its hub id."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from labutils.models import RECIPES, ensure_tiny_model
    from labutils.notebook import quiet
    from peft_grader.hub_cache import seed_hub_cache

    quiet()
    sources = {}
    for role, recipe in RECIPES.items():
        target = work / "f32" / role
        model = getattr(transformers, recipe.model_class).from_pretrained(ensure_tiny_model(role))
        model.to(torch.float32).save_pretrained(target)
        AutoTokenizer.from_pretrained(ensure_tiny_model(role)).save_pretrained(target)
        sources[role] = target
    seed_hub_cache(cache, sources=sources)


def seed_hub_size_cache(cache: Path, work: Path) -> None:
    """The hub cache for --measure: the HUB_SIZES models with random weights in bfloat16 (SmolLM2-360M's
    0.72 GB), with the course tokenizer; the other roles (loaded only by hidden checks) stay tiny."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from labutils.models import RECIPES, ensure_tiny_model
    from labutils.notebook import quiet
    from peft_grader.hub_cache import seed_hub_cache

    quiet()
    sources = {}
    for role, sizes in HUB_SIZES.items():
        recipe, target = RECIPES[role], work / "hub-size" / role
        torch.manual_seed(0)
        config = getattr(transformers, recipe.config_class)(**{**recipe.config, **sizes})
        getattr(transformers, recipe.model_class)(config).to(torch.bfloat16).save_pretrained(target)
        AutoTokenizer.from_pretrained(ensure_tiny_model(role)).save_pretrained(target)
        sources[role] = target
    seed_hub_cache(cache, sources=sources)
    seed_hub_cache(cache, roles=[role for role in RECIPES if role not in HUB_SIZES])


def census(lab: str, work: Path, env: dict[str, str]) -> list[dict]:
    log = work / f"{lab}.census.jsonl"
    nb = nbformat.read(nbcourse.SOURCE / lab / f"{lab}.ipynb", as_version=4)
    os.environ.update(env, PEFT_COURSE_CENSUS=str(log))
    (work / lab).mkdir()
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(work / lab)}}
    ).execute()
    seconds = time.perf_counter() - start
    names = [
        c.metadata.get("nbgrader", {}).get("grade_id") or f"cell {i}"
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
    ]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    for event in events:
        event["cell"] = names[event["cell"]] if event["cell"] < len(names) else "after"
        event["seconds"] = seconds
    return events


def peak(events: list[dict], shapes: dict, hub_ids: set[str]) -> dict:
    """The event where the weights held at hub size peak, and the CPU RAM's upper bound at its own peak: the
    kernel's resident memory with its tiny weights replaced by their hub size (every weight on the CPU)."""
    best = {"hub": -1.0, "cpu": 0.0}
    for event in events:
        sized = [(m, *hub_bytes(m, shapes, hub_ids)) for m in event["held"]]
        hub, now = sum(h for _, _, h in sized), sum(n for _, n, _ in sized)
        best["cpu"] = max(best["cpu"], event["rss"] - now + hub)
        if hub > best["hub"]:
            held = [
                f"{m['class']} {h / GB:.2f}"
                for m, _, h in sorted(sized, key=lambda s: -s[2])
                if h > 0.05 * GB
            ]
            best.update(hub=hub, now=now, cell=event["cell"], event=event["event"], held=held)
    return best


def measured(events: list[dict]) -> dict:
    """A run at hub size on a GPU: peak CPU RAM (the kernel's resident peak), the peak of GPU memory in tensors,
    and the device's peak in use: the allocator's reserve at its peak plus CUDA's context."""
    return {
        "seconds": events[-1]["seconds"],
        "cpu": max(e["rss_peak"] for e in events),
        "measured": max(e["cuda_peak"] for e in events),
        "device": max(e["cuda_reserved_peak"] for e in events) + max(e["cuda_context"] for e in events),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="*", default=None)
    parser.add_argument("--budget-gb", type=float, default=12.0, help="GPU memory budget (of a T4's 15 GB)")
    parser.add_argument(
        "--cpu-budget-gb", type=float, default=9.0, help="CPU RAM budget (of Colab's 12.7 GB)"
    )
    parser.add_argument("--measure", action="store_true", help="run at hub size on a CUDA device")
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args(argv)
    labs = args.labs or nbcourse.labs()
    if args.measure:
        import torch

        if not torch.cuda.is_available():
            print(
                "no CUDA device: --measure runs the labs at hub size on a GPU; without one, drop --measure "
                "for the prediction",
                file=sys.stderr,
            )
            return 2

    from labutils.profiles import HUB_MODELS

    work = Path(tempfile.mkdtemp(prefix="hub-memory-"))
    ipython = work / "ipython" / "profile_default" / "startup"
    ipython.mkdir(parents=True)
    (ipython / "00-census.py").write_text(CENSUS)
    (seed_hub_size_cache if args.measure else seed_float32_cache)(work / "hf-cache", work)
    env = {
        "PEFT_COURSE_PROFILE": "hub",
        "HF_HUB_CACHE": str(work / "hf-cache"),
        "HF_HUB_OFFLINE": "1",
        "IPYTHONDIR": str(work / "ipython"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(nbcourse.GRADER), os.environ.get("PYTHONPATH")])),
    }
    shapes, hub_ids = hub_shapes(), set(HUB_MODELS.values())
    rows = []
    budget = f"budget {args.budget_gb:g} GB on the GPU, {args.cpu_budget_gb:g} GB of CPU RAM"
    if args.measure:
        print(f"Measured at hub size on {torch.cuda.get_device_name(0)}; {budget}")
        print(
            f"{'lab':<20} {'seconds':>8} {'CPU GB':>7} {'GPU tensors GB':>15} {'GPU in use GB':>14} {'ok':>4}"
        )
    else:
        print(f"Predicted at hub size (float32 for dtype 'auto'); {budget}")
        print(f"{'lab':<20} {'weights GB':>10} {'CPU GB':>7} {'ok':>4} {'cell':<24} {'at':<16} held (GB)")
    for lab in labs:
        events = census(lab, work, env)
        if args.measure:
            top = measured(events)
            ok = top["device"] <= args.budget_gb * GB and top["cpu"] <= args.cpu_budget_gb * GB
            print(
                f"{lab:<20} {top['seconds']:8.1f} {top['cpu'] / GB:7.2f} {top['measured'] / GB:15.2f} "
                f"{top['device'] / GB:14.2f} {'yes' if ok else 'NO':>4}",
                flush=True,
            )
        else:
            top = peak(events, shapes, hub_ids)
            ok = top["hub"] <= args.budget_gb * GB and top["cpu"] <= args.cpu_budget_gb * GB
            print(
                f"{lab:<20} {top['hub'] / GB:10.2f} {top['cpu'] / GB:7.2f} {'yes' if ok else 'NO':>4} "
                f"{top['cell']:<24} {top['event']:<16} " + ", ".join(top["held"]),
                flush=True,
            )
        rows.append({"lab": lab, "within_budget": ok, **top})
    args.out.mkdir(parents=True, exist_ok=True)
    name = "hub_memory_measured.json" if args.measure else "hub_memory.json"
    (args.out / name).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["within_budget"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
