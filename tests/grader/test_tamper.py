"""The static tamper review, table-driven: honest code in every style passes untouched, hostile code is
neutralised (obfuscated forms included), and code that is only unusual is flagged, never removed.

No notebook runs here: each row is one learner cell, reviewed after the lab's own imports (the locked
cells a real submission has). The graded proof, through the whole pipeline, is the adversarial catalogue.
"""

from __future__ import annotations

import nbformat
import pytest

from peft_grader import tamper

# What the labs' locked cells import before any learner cell runs.
LAB_IMPORTS = """
import os
import sys
import json
from pathlib import Path
import torch
import bitsandbytes as bnb
import matplotlib.pyplot as plt
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments
import labutils
"""

HONEST = [
    # magics and shell commands
    "%load_ext autoreload\n%autoreload 2",
    "import sys\non_colab = 'google.colab' in sys.modules",
    "import sys\nif 'torch' not in sys.modules:\n    print('torch not loaded yet')",
    "import importlib\nimport helper\nhelper = importlib.reload(helper)",
    "from importlib import reload\nimport helper\nreload(helper)",
    "%config InlineBackend.figure_format = 'svg'",
    "%%writefile helper.py\ndef mean(values):\n    return sum(values) / len(values)",
    "%%writefile notes.txt\nimport checks",
    "%%time\nmodel.save_pretrained(ADAPTER_DIR)",
    "%%timeit -n 1 -r 1\nmodel(**batch)",
    "%timeit -n 3 torch.ones(3) @ torch.ones(3)",
    "%time losses = train(model)",
    "%matplotlib inline",
    "%env TOKENIZERS_PARALLELISM=false",
    "%pip install -q peft",
    "!ls -la {ADAPTER_DIR}",
    "files = !ls\nprint(files)",
    "%%capture out\nmodel.print_trainable_parameters()",
    "%%bash\necho hello",
    "%%writefile notes.txt\nrank 16 worked best",
    "model?",
    "%who",
    # environment variables and library flags
    'os.environ["TOKENIZERS_PARALLELISM"] = "false"',
    'os.environ.setdefault("HF_HUB_OFFLINE", "1")',
    'os.environ["HF_HOME"] = str(Path("hf").resolve())',
    'del os.environ["CUDA_VISIBLE_DEVICES"]',
    "from os import environ\nenviron['WANDB_DISABLED'] = 'true'",
    "torch.backends.cuda.matmul.allow_tf32 = True",
    "torch.backends.cudnn.benchmark = False",
    "torch.backends.mkldnn.enabled = False",
    'torch.set_float32_matmul_precision("high")',
    "torch.set_num_threads(2)\ntorch.manual_seed(0)",
    'plt.rcParams["figure.figsize"] = (8, 4)',
    "plt.rcParams.update({'font.size': 9})",
    "import transformers\ntransformers.logging.set_verbosity_error()",
    "import logging\nlogging.getLogger('transformers').setLevel(logging.ERROR)",
    "import warnings\nwarnings.filterwarnings('ignore')",
    # reading objects: vars(), getattr(), __class__, __dict__ on the learner's own things
    "print(vars(training_args))",
    "settings = {k: v for k, v in vars(lora_config).items() if not k.startswith('_')}",
    'dtype = getattr(torch, "bfloat16")',
    "name = 'float16'\ncompute_dtype = getattr(torch, name)",
    "for name in ['q_proj', 'v_proj']:\n    print(getattr(layer.self_attn, name))",
    "print(type(model).__name__, model.__class__.__name__)",
    "print(sorted(model.config.__dict__)[:5])",
    "print(hasattr(model, 'peft_config'))",
    # prints and strings naming things
    'print("my checks pass: the adapter has checks of its own")',
    'print("see sys.modules and get_ipython in the docs")',
    # attribute assignments on the learner's own models and configs
    "model.config.use_cache = False",
    "tokenizer.pad_token = tokenizer.eos_token",
    "lora_config.r = 8\nlora_config.lora_alpha = 16",
    'setattr(model.config, "use_cache", False)',
    "training_args.max_steps = 10",
    "bnb_config.bnb_4bit_compute_dtype = torch.float16",
    # shadowing a builtin name is bad style, not tampering
    "type = bnb_config.bnb_4bit_quant_type\nprint(type)",
    "sum = 0\nfor p in model.parameters():\n    sum += p.numel()",
    "def print_share(m):\n    print(m.get_nb_trainable_parameters())",
    "id = 3\nmax = 10\ninput = 'hi'",
    # honest uses of gc, inspect, importlib.metadata, sys, globals
    "import gc\ndel model\ngc.collect()",
    "import inspect\nprint(inspect.signature(LoraConfig))",
    "from importlib.metadata import version\nprint(version('peft'))",
    "import importlib.metadata\nprint(importlib.metadata.version('torch'))",
    "print(sys.version, sys.platform)\nsys.stdout.flush()",
    "sys.path.append('..')",
    "print('model' in globals())",
    "any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())",
    "from IPython.display import display, Markdown\ndisplay(Markdown('**done**'))",
    "model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)",
    "lora = LoraConfig(r=16, lora_alpha=32, target_modules=r'.*\\.(q|k|v|o)_proj', task_type=TaskType.CAUSAL_LM)",
]

HOSTILE = [
    # the check modules, directly and indirectly
    "import checks.lab04_qlora.kernel as q\nq.kbit_prepared = lambda ns: None",
    "from checks import qlora",
    "_m = getattr(sys, 'mod' + 'ules')\nobject.__setattr__(_m['checks.lab04_qlora.kernel'], 'fail', print)",
    "object.__setattr__(q, 'kbit_prepared', print)",
    "getattr(sys, 'modules')['checks.lab04_qlora.kernel'].kbit_prepared = print",
    "for name in [m for m in sys.modules if m.startswith('checks')]:\n    del sys.modules[name]",
    "mods = vars(sys)['modules']",
    # the import system
    "import importlib\nimportlib.invalidate_caches()",
    "imp = __import__('import' + 'lib')",
    "sys.meta_path.insert(0, Finder())",
    "from sys import meta_path",
    "import importlib.abc",
    "sys.path_importer_cache.clear()",
    # builtins and the namespace the hidden cells use
    "import builtins\nbuiltins.AssertionError = Exception",
    "def globals():\n    return {'model': fake}",
    "globals = lambda: {}",
    "__builtins__.print = None",
    "b = len.__self__\nb.AssertionError = Exception",
    # libraries the checks read
    "torch.count_nonzero = lambda *a, **k: torch.tensor(1)",
    "PeftModel.get_nb_trainable_parameters = lambda self: (1, 1000)",
    "setattr(PeftModel, 'get_nb_trainable_parameters', lambda self: (1, 1000))",
    "P = PeftModel\nP.get_nb_trainable_parameters = fake_counter",
    "vars(torch)['count_nonzero'] = fake",
    "torch.__dict__.update(count_nonzero=fake)",
    "setattr(bnb.nn, name, Fake)",
    "del torch.count_nonzero",
    # IPython's hooks and the shell
    "get_ipython().input_transformers_post.append(swallow)",
    "ip = exit._ip\nip.ast_transformers.append(t)",
    "from IPython import get_ipython",
    "exec('import check' + 's')",
    "eval(compile('1', 'x', 'eval'))",
    # frames, tracing, the garbage collector, raw memory
    "sys.settrace(tracer)",
    "import threading\nthreading.settrace(tracer)",
    "import gc\nmods = [o for o in gc.get_objects() if type(o).__name__ == 'module']",
    "import gc as g\ng.get_referrers(fail)",
    "import inspect\ninspect.currentframe().f_back.f_globals['model'] = fake",
    "frame = sys._getframe(1)",
    "import ctypes",
    "f.__code__ = (lambda ns: None).__code__",
    "subclasses = ().__class__.__base__.__subclasses__()",
    "model.__class__ = PreparedLooking",
    "%time import checks",
    "%%time\nimport builtins\nbuiltins.print = None",
    "import peft_grader.kernel_guard as g\ng._guard = None",
    "import os\nos.sys.modules['checks'] = None",
    "import os\nchecks = os.sys.modules.get('checks.lab04_qlora.kernel')",
    "import pkgutil\nk = pkgutil.resolve_name('checks.lab04_qlora.kernel')",
    "import importlib\nk = importlib.import_module('chec' + 'ks')",
    "from importlib import import_module\nk = import_module('checks')",
    "import importlib.util",
    "%%writefile helper.py\nimport sys\nsys.modules['checks'] = None",
]

FLAGGED = [
    "%run helper.py",
    "%some_unknown_magic x",
]


def _review(cell: str) -> list[tamper.Finding]:
    ctx = tamper._Context()
    tamper.review_cell(LAB_IMPORTS, ctx)
    return tamper.review_cell(cell, ctx)


def test_the_table_is_big_enough():
    assert len(HONEST) >= 40 and len(HOSTILE) >= 20 and len(set(HONEST)) == len(HONEST)


@pytest.mark.parametrize("cell", HONEST)
def test_honest_code_passes_untouched(cell):
    assert _review(cell) == []
    ctx = tamper._Context()
    tamper.review_cell(LAB_IMPORTS, ctx)
    assert tamper.sanitize_cell(cell, ctx) == (cell, [])


@pytest.mark.parametrize("cell", HOSTILE)
def test_hostile_code_is_neutralised(cell):
    findings = _review(cell)
    assert any(f.neutralised for f in findings), findings
    ctx = tamper._Context()
    tamper.review_cell(LAB_IMPORTS, ctx)
    sanitized, _ = tamper.sanitize_cell(cell, ctx)
    assert "# removed by the grader (tampering)" in sanitized


@pytest.mark.parametrize("cell", FLAGGED)
def test_unusual_code_is_flagged_and_runs_as_written(cell):
    findings = _review(cell)
    assert findings and not any(f.neutralised for f in findings), findings
    ctx = tamper._Context()
    tamper.review_cell(LAB_IMPORTS, ctx)
    assert tamper.sanitize_cell(cell, ctx)[0] == cell


def test_findings_name_the_cell_and_line():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            LAB_IMPORTS, metadata={"nbgrader": {"grade_id": "imports", "locked": True}}
        ),
        nbformat.v4.new_code_cell("x = 1\ntorch.count_nonzero = len\n%run other.py"),
        nbformat.v4.new_code_cell("print('fine')", metadata={"nbgrader": {"grade_id": "save"}}),
    ]
    neutralised, flagged = tamper.sanitize(nb, restored_ids={"imports"})
    assert neutralised == ["cell #2 line 2: patches torch.count_nonzero of an imported library"]
    assert flagged == ["cell #2 line 3: the magic %run runs code the review cannot see"]
    assert nb.cells[1].source.splitlines()[0] == "x = 1"
    assert nb.cells[1].source.splitlines()[1].startswith("# removed by the grader (tampering)")
    assert nb.cells[0].source == LAB_IMPORTS  # locked cells are nbgrader's to restore, not ours


def test_a_syntax_error_is_left_for_the_kernel_to_report():
    assert _review("def broken(:\n    pass") == []
