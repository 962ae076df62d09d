"""Static review of a submission before it runs: hostile statements are neutralised, odd ones flagged.

A learner's cells share a process with the hidden checks, so a cell could replace the checks, the
libraries they read, the interpreter's import machinery or IPython's error reporting. Two layers make
that useless (grader/README.md, threat model):

- here, before grading, each cell a learner can edit is parsed (as IPython runs it: magics translated)
  and every top-level statement that can only serve to reach into the grader is commented out, with
  the cell and line in the summary. A construct that is merely unusual (a magic that runs other code,
  `%run`, `%load_ext`) is flagged for review and runs as written: it never costs points.
- in the kernel, `peft_grader.kernel_guard` undoes after every cell what it did to the grading
  environment, and refuses at run time what this static pass cannot see through.

Honest code in any style passes untouched: `%%time` and other magics, `os.environ[...] = ...`, library
flags set to constants, `vars()`/`getattr()` on the learner's own objects, shadowing a builtin's name,
`gc.collect()`, `inspect.signature(...)`. tests/test_tamper.py holds the table of both kinds.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# Modules whose import can only serve to reach the grader or the interpreter's internals.
DENIED_IMPORTS = {
    "checks",
    "peft_grader",  # the kernel guard and what it recorded
    "builtins",
    "ctypes",
    "_ctypes",
    "_imp",
    "imp",
    "_testcapi",
}
# importlib itself is honest for reloading the learner's own helper module, and for package versions and data
# files; its import machinery is not
ALLOWED_SUBMODULES = {"importlib.metadata", "importlib.resources"}
DENIED_SUBMODULES = ("importlib.",)  # any other importlib.* module
# Functions of otherwise honest modules that reach frames, other objects' referrers or the import system.
DENIED_MEMBERS = {
    "sys": {
        "modules",
        "meta_path",
        "path_hooks",
        "path_importer_cache",
        "settrace",
        "setprofile",
        "_getframe",
        "_current_frames",
        "excepthook",
        "displayhook",
        "breakpointhook",
        "__dict__",
    },
    "gc": {"get_referrers", "get_referents", "get_objects"},
    "inspect": {"currentframe", "stack", "getouterframes", "getinnerframes", "trace"},
    "threading": {"settrace", "setprofile", "settrace_all_threads", "setprofile_all_threads"},
    "IPython": {"get_ipython"},
    "importlib": {
        "import_module",
        "invalidate_caches",
        "util",
        "machinery",
        "abc",
        "_bootstrap",
        "_bootstrap_external",
        "__import__",
    },
    # resolvers that return a loaded module (the checks) from a string
    "pkgutil": {"resolve_name", "get_importer", "iter_importers", "find_loader", "get_loader"},
}
# Modules on which even a computed attribute name is a way in (getattr(sys, "mod" + "ules")).
SENSITIVE_MODULES = {
    "sys",
    "builtins",
    "gc",
    "inspect",
    "IPython",
    "threading",
    "types",
    "importlib",
    "pkgutil",
}
SENSITIVE_MODULES |= DENIED_IMPORTS
DENIED_NAMES = {
    "__builtins__",
    "__import__",
    "__build_class__",
    "exec",
    "eval",
    "compile",
    "get_ipython",
    "__loader__",
    "__spec__",
}
# Names the hidden test cells use: a notebook-level definition would stand in for the real one.
PROTECTED_NAMES = {"globals", "__builtins__", "__import__", "__build_class__"}
# Attributes that reach code objects, frames, namespaces of functions, the interpreter or the shell.
DENIED_ATTRIBUTES = {
    "__code__",
    "__globals__",
    "__closure__",
    "__builtins__",
    "__import__",
    "__subclasses__",
    "__self__",
    "__setattr__",
    "__delattr__",
    "__getattribute__",
    "__loader__",
    "__spec__",
    "f_globals",
    "f_locals",
    "f_builtins",
    "f_back",
    "tb_frame",
    "gi_frame",
    "cr_frame",
    "ag_frame",
    "_ip",  # IPython's exit/quit objects hold the shell
    "input_transformers_post",
    "input_transformers_cleanup",
    "ast_transformers",
    "user_ns",
    "user_global_ns",
}
WRITE_ONLY_ATTRIBUTES = {"__class__", "__dict__", "__bases__", "__mro__"}  # reading them is honest
DICT_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
TORCH_DTYPES = {
    "float32",
    "float",
    "float16",
    "half",
    "bfloat16",
    "float64",
    "double",
    "int8",
    "uint8",
    "int32",
    "int64",
    "bool",
}
# Magics: these run the learner's Python (their argument or body is reviewed like any code) ...
PYTHON_MAGICS = {"time", "timeit", "prun", "capture"}
# ... these run nothing in the kernel's namespace (plots, shell, environment, display, files) ...
HARMLESS_MAGICS = {
    "matplotlib",
    "env",
    "set_env",
    "pip",
    "conda",
    "mamba",
    "who",
    "whos",
    "who_ls",
    "precision",
    "pwd",
    "cd",
    "ls",
    "ll",
    "pinfo",
    "pinfo2",
    "psearch",
    "pdoc",
    "pdef",
    "psource",
    "history",
    "lsmagic",
    "magic",
    "page",
    "pprint",
    "xmode",
    "colors",
    "tb",
    "system",
    "sx",
    "sc",
    "bash",
    "sh",
    "script",
    "html",
    "HTML",
    "javascript",
    "js",
    "latex",
    "markdown",
    "svg",
    "writefile",
    "file",
    "python",
    "python3",
    "reset",
    "xdel",
    "notebook",
    # IPython's extensions and settings: %load_ext autoreload is honest; a module of the learner's it loads is the
    # kernel guard's to judge (modules written at run time), like any import
    "load_ext",
    "reload_ext",
    "unload_ext",
    "autoreload",
    "aimport",
    "config",
}
# ... and anything else (%run, %load_ext, %config, %load, %autoreload, unknown ones) is flagged for review.
_OPTIONS = re.compile(r"^(\s*-\w+(\s+(?!-)\S+)?)*\s*")  # leading `-n 10 -r 1` of %timeit and friends


@dataclass(frozen=True)
class Finding:
    line: int  # 1-based, in the cell
    why: str
    neutralised: bool  # commented out before grading; False: flagged for review, ran as written

    def __str__(self) -> str:
        return f"line {self.line}: {self.why}"


def _python(source: str) -> str:
    """The cell as IPython runs it: magics and `!` commands translated to get_ipython() calls."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _dotted(node: ast.AST) -> str | None:
    """'a.b.c' for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call, ast.Starred)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _constant(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


class _Context:
    """What the notebook imported, by local name: {'np': 'numpy', 'Path': 'pathlib.Path', ...}."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}

    def learn(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    self.modules[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif (  # x = torch.nn / P = peft.PeftModel: an alias of something imported
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and (dotted := _dotted(node.value))
                and dotted.split(".")[0] in self.modules
            ):
                head, *rest = dotted.split(".")
                self.modules[node.targets[0].id] = ".".join([self.modules[head], *rest])

    def resolve(self, node: ast.AST) -> str | None:
        """The imported thing an expression's root names ('sys', 'torch.nn.Module'), or None."""
        root = _root(node)
        return self.modules.get(root) if root else None

    def module_of(self, node: ast.AST) -> str | None:
        """The top-level module an expression's root was imported from, or a sensitive module reached as an
        attribute of another (`os.sys`, `pkgutil.sys`: the same sys)."""
        resolved = self.resolve(node)
        if not resolved:
            return None
        dotted = _dotted(node) or ""
        parts = [*resolved.split("."), *dotted.split(".")[1:]]
        through = [p for p in parts[1:] if p in SENSITIVE_MODULES]
        return through[-1] if through else parts[0]


def _attribute_finding(owner: str | None, attr: str, write: bool) -> str:
    if attr in DENIED_ATTRIBUTES:
        return f"touches .{attr}"
    if write and attr in WRITE_ONLY_ATTRIBUTES:
        return f"replaces .{attr}"
    if owner and attr in DENIED_MEMBERS.get(owner, ()):
        return f"uses {owner}.{attr}"
    return ""


def _allowed_value(node: ast.AST, ctx: _Context) -> bool:
    """A value honest code gives a library setting: a literal, a dtype, an UPPER_CASE constant."""
    if node is None or _constant(node):
        return True
    dotted = _dotted(node)
    if dotted and ctx.module_of(node):
        leaf = dotted.rsplit(".", 1)[-1]
        return leaf in TORCH_DTYPES or leaf.isupper()
    return False


def _target_finding(target: ast.AST, value: ast.AST | None, ctx: _Context) -> str:
    """Why assigning `value` to `target` (or deleting it: value None, delete) reaches into the grader."""
    if isinstance(target, ast.Name) and target.id in PROTECTED_NAMES:
        return f"redefines {target.id}, which the hidden test cells use"
    if isinstance(target, (ast.Tuple, ast.List)):
        return next((w for e in target.elts if (w := _target_finding(e, None, ctx))), "")
    if isinstance(target, ast.Attribute):
        if why := _attribute_finding(ctx.module_of(target.value), target.attr, write=True):
            return why
    if not isinstance(target, (ast.Attribute, ast.Subscript)):
        return ""
    if _is_namespace(target.value, ctx):
        return f"writes into {ast.unparse(target.value)}, another module's namespace"
    resolved = ctx.resolve(target)
    if resolved is None:
        return ""  # the learner's own objects: model.config.use_cache = False
    dotted = _dotted(target.value) or ""
    if resolved in ("os", "os.environ") and (dotted.endswith("environ") or resolved == "os.environ"):
        return ""  # environment variables
    if value is not None and _allowed_value(value, ctx):
        return ""  # a library flag: torch.backends.cuda.matmul.allow_tf32 = True
    return f"patches {ast.unparse(target)} of an imported library"


def _is_namespace(node: ast.AST, ctx: _Context) -> bool:
    """vars(<imported>) or <imported>.__dict__: a module's or library class's own namespace."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "vars"
        and node.args
    ):
        return ctx.resolve(node.args[0]) is not None
    if isinstance(node, ast.Attribute) and node.attr == "__dict__":
        return ctx.resolve(node.value) is not None
    return False


def _call_finding(call: ast.Call, ctx: _Context) -> str:
    func = call.func
    if isinstance(func, ast.Name) and func.id in ("getattr", "setattr", "delattr", "hasattr") and call.args:
        owner = ctx.module_of(call.args[0])
        name = call.args[1] if len(call.args) > 1 else None
        write = func.id in ("setattr", "delattr")
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            if why := _attribute_finding(owner, name.value, write):
                return why
            if write:
                target = ast.Attribute(value=call.args[0], attr=name.value, ctx=ast.Store())
                return _target_finding(target, call.args[2] if len(call.args) > 2 else None, ctx)
            return ""
        if owner in SENSITIVE_MODULES or (write and owner):
            return f"{func.id}() with a computed name on {ast.unparse(call.args[0])}"
        return ""
    if isinstance(func, ast.Name) and func.id == "vars" and call.args and ctx.resolve(call.args[0]):
        return f"reads {ast.unparse(call.args[0])}'s namespace with vars()"
    if isinstance(func, ast.Attribute) and func.attr in DICT_MUTATORS and _is_namespace(func.value, ctx):
        return f"writes into {ast.unparse(func.value)}, another module's namespace"
    return ""


def _import_finding(node: ast.Import | ast.ImportFrom) -> str:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in ALLOWED_SUBMODULES:
                continue
            if alias.name.split(".")[0] in DENIED_IMPORTS or alias.name.startswith(DENIED_SUBMODULES):
                return f"imports {alias.name}"
            if alias.asname in PROTECTED_NAMES:
                return f"redefines {alias.asname}, which the hidden test cells use"
        return ""
    module = node.module or ""
    top = module.split(".")[0]
    if (
        node.level == 0
        and module not in ALLOWED_SUBMODULES
        and (top in DENIED_IMPORTS or module.startswith(DENIED_SUBMODULES))
    ):
        return f"imports from {module}"
    for alias in node.names:
        if alias.name in DENIED_MEMBERS.get(top, ()) or alias.name in DENIED_NAMES:
            return f"imports {alias.name} from {module}"
        if (alias.asname or alias.name) in PROTECTED_NAMES:
            return f"redefines {alias.asname or alias.name}, which the hidden test cells use"
    return ""


def _magic(node: ast.AST) -> tuple[str, str, ast.Call] | None:
    """('line' | 'cell' | 'shell', magic name, call) for a get_ipython().run_*_magic(...) call."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
    ):
        return None
    kind = {"run_line_magic": "line", "run_cell_magic": "cell", "system": "shell", "getoutput": "shell"}
    if node.func.attr not in kind:
        return None
    first = node.args[0] if node.args else None
    name = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
    return kind[node.func.attr], name, node


def _writes_python(argument: ast.AST) -> bool:
    """Whether a %%writefile line (`-a PATH`) names a Python file."""
    text = argument.value if isinstance(argument, ast.Constant) and isinstance(argument.value, str) else ""
    return bool(text.split()) and text.split()[-1].strip("'\"").endswith(".py")


def _review(tree: ast.Module, ctx: _Context, magics_allowed: bool, offset: int = 0) -> list[Finding]:
    """Findings for every top-level statement of a parsed cell."""
    return [f for statement in tree.body for f in _statement(statement, ctx, magics_allowed, offset)]


def _statement(statement: ast.stmt, ctx: _Context, magics_allowed: bool, offset: int) -> list[Finding]:
    line = statement.lineno + offset
    flags: list[Finding] = []
    magic_calls = set()
    # `"google.colab" in sys.modules` (the labs' own set-up cell asks it): a membership test reads no module
    membership = {
        id(right)
        for node in ast.walk(statement)
        if isinstance(node, ast.Compare) and all(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)
        for right in node.comparators
        if isinstance(right, ast.Attribute) and right.attr == "modules"
    }
    for node in ast.walk(statement):
        if magics_allowed and (magic := _magic(node)):
            kind, name, call = magic
            magic_calls.add(id(call.func.value.func))
            if name == "writefile" and len(call.args) > 2 and _writes_python(call.args[1]):
                # a Python file the notebook writes and may import: its body is reviewed as code
                try:
                    inner = ast.parse(call.args[2].value)
                except (SyntaxError, AttributeError):
                    continue
                found = _review(inner, ctx, False, line)
                if hostile := [f for f in found if f.neutralised]:
                    return [Finding(line, f"%%writefile writes code that {hostile[0].why}", True)]
                flags += found
                continue
            if kind == "shell" or name in HARMLESS_MAGICS:
                continue
            if name in PYTHON_MAGICS:  # the argument (and a cell magic's body) is Python: review it
                texts = [
                    (_OPTIONS.sub("", a.value, count=1) if i == 1 else a.value, i == 2)
                    for i, a in enumerate(call.args)
                    if i and isinstance(a, ast.Constant)
                ]
                for text, is_body in texts:
                    try:
                        inner = ast.parse(text)
                    except SyntaxError:
                        continue  # IPython reports it when the cell runs
                    found = _review(inner, ctx, False, line - 1 + is_body)
                    if hostile := [f for f in found if f.neutralised]:
                        return [Finding(line, f"%{name} runs code that {hostile[0].why}", True)]
                    flags += found
                continue
            flags.append(Finding(line, f"the magic %{name} runs code the review cannot see", False))
            continue
        why = ""
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            why = _import_finding(node)
        elif isinstance(node, ast.Name) and node.id in DENIED_NAMES and id(node) not in magic_calls:
            why = f"uses {node.id}"
        elif (
            isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and id(node) not in membership
        ):
            why = _attribute_finding(ctx.module_of(node.value), node.attr, write=False)
        elif isinstance(node, ast.Call):
            why = _call_finding(node, ctx)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in PROTECTED_NAMES:
                why = f"redefines {node.name}, which the hidden test cells use"
        elif isinstance(node, ast.Assign):
            why = next((w for t in node.targets if (w := _target_finding(t, node.value, ctx))), "")
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            why = _target_finding(node.target, None if isinstance(node, ast.AugAssign) else node.value, ctx)
        elif isinstance(node, ast.Delete):
            why = next((w for t in node.targets if (w := _target_finding(t, None, ctx))), "")
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension, ast.withitem)):
            target = node.optional_vars if isinstance(node, ast.withitem) else node.target
            if isinstance(target, ast.Name) and target.id in PROTECTED_NAMES:
                why = f"redefines {target.id}, which the hidden test cells use"
        elif isinstance(node, ast.NamedExpr):
            why = _target_finding(node.target, node.value, ctx)
        elif isinstance(node, (ast.Global, ast.Nonlocal)) and set(node.names) & PROTECTED_NAMES:
            why = "redefines a name the hidden test cells use"
        if why:
            return [Finding(line, why, True)]
    return flags


def review_cell(source: str, ctx: _Context | None = None) -> list[Finding]:
    """Every finding for one cell: neutralised (hostile) and flagged (only unusual) alike."""
    ctx = ctx or _Context()
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []  # it fails when it runs, like any syntax error, in IPython too
    ctx.learn(tree)
    # get_ipython() calls are magics' translations, unless the learner wrote the name themselves
    return _review(tree, ctx, magics_allowed=not re.search(r"\bget_ipython\b", source))


def sanitize_cell(source: str, ctx: _Context | None = None) -> tuple[str, list[Finding]]:
    """The cell with hostile statements commented out, and every finding."""
    findings = review_cell(source, ctx)
    hostile = [f for f in findings if f.neutralised]
    if not hostile:
        return source, findings
    code = _python(source)
    tree = ast.parse(code)
    # comment out the original lines where the translation kept the lines (it does for line magics)
    lines = source.splitlines() if len(source.splitlines()) == len(code.splitlines()) else code.splitlines()
    removed = set()
    for statement in tree.body:
        if any(statement.lineno <= f.line <= (statement.end_lineno or statement.lineno) for f in hostile):
            removed |= set(range(statement.lineno - 1, statement.end_lineno or statement.lineno))
    kept = [
        f"# removed by the grader (tampering): {text}" if i in removed else text
        for i, text in enumerate(lines)
    ]
    return "\n".join(kept) + "\n", findings


def sanitize(nb, restored_ids: set[str]) -> tuple[list[str], list[str]]:
    """Sanitize, in place, every code cell a learner can edit.

    Returns (neutralised, flagged) as 'cell NAME line N: why' strings: the first for the summary's
    reason, the second for the instructor's review (the cell ran as written).
    """
    ctx = _Context()
    for cell in (c for c in nb.cells if c.cell_type == "code"):  # the lab's own imports are locked cells
        try:
            ctx.learn(ast.parse(_python(cell.source)))
        except SyntaxError:
            pass
    neutralised, flagged = [], []
    for index, cell in enumerate(nb.cells):
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type != "code" or gid in restored_ids:
            continue
        cell.source, found = sanitize_cell(cell.source, ctx)
        name = gid or f"#{index + 1}"
        for finding in found:
            (neutralised if finding.neutralised else flagged).append(f"cell {name} {finding}")
    return neutralised, flagged
