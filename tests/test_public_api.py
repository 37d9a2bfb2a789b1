"""The public surface: exported names stay sorted and deliberate, docs run."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import flatstate
from flatstate import errors
from tests.conftest import check_docstring_examples

PUBLIC = [
    "AsyncSessionStore",
    "AsyncTranscript",
    "Draft",
    "FrozenMap",
    "SessionEntry",
    "SessionStore",
    "Snapshot",
    "StoreStats",
    "errors",
    "open_async_store",
    "open_store",
]


def test_exported_members() -> None:
    assert flatstate.__all__ == sorted(flatstate.__all__)
    assert flatstate.__all__ == PUBLIC
    for name in PUBLIC:
        assert hasattr(flatstate, name)


# Every error class of flatstate.errors, found in the module: a new one is covered at once.
ERRORS = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == errors.__name__
]

# A sample argument for each parameter type an error's constructor takes.
SAMPLES: dict[object, object] = {
    str: "a-str",
    int: 7,
    float: 1.5,
    bool: False,
    object: "an-object",
    str | None: "a-str-or-none",
    int | None: 42,
}


def build_error(cls: type[Exception]) -> Exception:
    """An instance of ``cls`` made from sample arguments, one per constructor parameter."""
    if cls.__init__ is Exception.__init__:
        return cls("a message")
    hints = typing.get_type_hints(cls.__init__)
    args = {}
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        hint = hints[name]
        assert hint in SAMPLES, f"{cls.__name__}({name}: {hint}): add a sample to SAMPLES"
        args[name] = SAMPLES[hint]
    return cls(**args)


def test_every_error_derives_from_the_root_and_a_builtin() -> None:
    assert len(ERRORS) >= 17
    for cls in ERRORS:
        assert issubclass(cls, errors.FlatstateError)
        if cls is not errors.FlatstateError:
            leaves = [b for b in cls.__mro__ if b.__module__ == "builtins"]
            assert leaves[0] not in (Exception, BaseException), cls


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_errors_survive_pickling(cls: type[Exception]) -> None:
    err = build_error(cls)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is cls and str(copy) == str(err) and copy.args == err.args
    assert copy.__dict__ == err.__dict__


@pytest.mark.parametrize(
    "module",
    [
        "flatstate.frozen",
        "flatstate.keys",
        "flatstate.model",
        "flatstate._open",
        "flatstate.aio",
        "flatstate.locks",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    check_docstring_examples(module)


def test_importing_the_library_loads_no_cli_or_benchmark_dependency() -> None:
    """The CLI (typer, rich) and the benchmarks (psutil, matplotlib) import those; a
    gateway that only uses the library never pays for them."""
    code = "import sys, flatstate; print(sorted(set(sys.modules) & set(sys.argv[1:])))"
    heavy = ["typer", "rich", "psutil", "matplotlib", "click"]
    done = subprocess.run(
        [sys.executable, "-c", code, *heavy], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_cli_prints_the_one_version() -> None:
    import tomllib

    done = subprocess.run(
        [sys.executable, "-m", "flatstate", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"flatstate {flatstate.__version__}"
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
