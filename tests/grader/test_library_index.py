"""The kernel guard's quick comparison of the libraries (`_LibraryIndex`) sees every change the full restore
would undo: a module function or a class member replaced, a method added to a class, a member the library
added since the snapshot replaced, a module loaded again or swapped in sys.modules. Wherever it says
"untouched", the full restore would have had nothing to do; so the guard skips it safely."""

from __future__ import annotations

import sys
import types

import pytest

from peft_grader import kernel_guard

LIBRARY = "peft_grader._index_probe"  # a module under a guarded library's name (peft_grader)


class _Probe:
    def method(self):
        return "pristine"


def _probe_module():
    module = types.ModuleType(LIBRARY)
    module.function = lambda: "pristine"
    module.Probe = type("Probe", (_Probe,), {"__module__": LIBRARY, "own": lambda self: "own"})
    return module


@pytest.fixture
def guard():
    sys.modules[LIBRARY] = _probe_module()
    guard = object.__new__(kernel_guard._Guard)  # only the library snapshot is under test
    guard.libraries, guard._index = {}, None
    guard._restore_libraries()  # snapshots everything loaded and builds the index
    guard._restore_libraries()
    assert guard._index is not None and guard._libraries_as_indexed()
    yield guard
    sys.modules.pop(LIBRARY, None)


def _replace_function(module):
    module.function = lambda: "learner's"


def _replace_method(module):
    module.Probe.own = lambda self: "learner's"


def _add_method_over_inherited(module):
    module.Probe.method = lambda self: "learner's"


def _replace_member_added_later(module):
    module.Probe.cache = None  # the library's own, after the snapshot
    yield
    module.Probe.cache = lambda self: "learner's"


def _swap_module(module):
    sys.modules[LIBRARY] = _probe_module()


def _delete_function(module):
    del module.function


CHANGES = [
    _replace_function,
    _replace_method,
    _add_method_over_inherited,
    _replace_member_added_later,
    _swap_module,
    _delete_function,
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_every_change_the_full_restore_undoes_is_seen(guard, change):
    module = sys.modules[LIBRARY]
    steps = change(module)
    if isinstance(steps, types.GeneratorType):  # a library step first, indexed, then the learner's change
        next(steps)
        guard._restore_libraries()
        assert guard._libraries_as_indexed()
        next(steps, None)
    assert not guard._libraries_as_indexed()
    guard._restore_libraries()
    current = sys.modules[LIBRARY]
    probe = current.Probe
    assert current.function() == "pristine"
    assert probe().own() == "own"
    assert probe().method() == "pristine"
    assert not callable(vars(probe).get("cache"))
    assert guard._libraries_as_indexed()


def test_a_library_module_loaded_later_is_snapshotted_without_the_full_pass(guard):
    late = types.ModuleType(LIBRARY + "_late")
    late.function = lambda: "pristine"
    sys.modules[late.__name__] = late
    try:
        assert guard._libraries_as_indexed()  # snapshotted as it is now: its pristine state
        assert late.__name__ in guard.libraries
        late.function = lambda: "learner's"
        assert not guard._libraries_as_indexed()
        guard._restore_libraries()
        assert late.function() == "pristine"
    finally:
        sys.modules.pop(late.__name__, None)


def test_a_learners_object_that_claims_equality_is_not_taken_for_the_original(guard):
    class Equal:
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

        def __call__(self):
            return "learner's"

    sys.modules[LIBRARY].function = Equal()
    assert not guard._libraries_as_indexed()
