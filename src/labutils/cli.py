"""The `labutils` command: one entry point for learners and instructors.

Errors a user can fix (CourseError) are printed as one readable message, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from labutils.errors import CourseError


def _doctor(args: argparse.Namespace) -> int:
    from labutils.doctor import main as doctor_main

    return doctor_main()


def _build_models(args: argparse.Namespace) -> int:
    from labutils.models import build_all

    build_all(args.roles or None)
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from labutils.smoke import main as smoke_main

    return smoke_main()


def _demo(args: argparse.Namespace) -> int:
    from peft_grader.demo import main as demo_main

    return demo_main()


# Commands of the instructor's house (grader/peft_grader), which labutils never imports unless asked to run
# one of them: a learner's install without the grader still has `labutils`, and these say what to install.
GRADER_COMMANDS = {
    "demo": "models, doctor, smoke run, release, and a graded sample class",
    "release": "regenerate the learner notebooks from grader/source with nbgrader",
    "grade": "autograde a class: a folder of <student>/<lab>.ipynb, or a zip",
    "check": "self-check a lab notebook against the hidden checks",
    "hub": "a class on JupyterHub: start it, release labs, collect, return feedback",
    "mutate": "mutation testing: grade mutants of labs' reference solutions",
}


def grader_missing() -> str:
    """'' when the grading engine and nbgrader can be imported, else what to install and how."""
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a broken or blocked install counts as absent
            return True

    missing = [name for name in ("peft_grader", "nbgrader") if absent(name)]
    if not missing:
        return ""
    return (
        f"this needs the course's grader, which is not installed here ({' and '.join(missing)} missing). Fix: "
        "in a clone of the full course run `make setup` (or pip install -e '.[grader]'); with a class's "
        "learner copy, which has no hidden checks, run the visible tests in the notebook and let your "
        "instructor grade it."
    )


def _without_grader(args: argparse.Namespace) -> int:
    raise CourseError(f"`labutils {args.command}`: {grader_missing()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labutils", description="PEFT course utilities.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="check that this environment can run the course")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("build-models", help="build the tiny-profile course models into the cache")
    p.add_argument("roles", nargs="*", help="roles to build (default: all)")
    p.set_defaults(func=_build_models)

    p = sub.add_parser("smoke", help="the QLoRA pattern end to end on the tiny model, with a summary")
    p.set_defaults(func=_smoke)

    if grader_missing():
        for name, text in GRADER_COMMANDS.items():
            p = sub.add_parser(name, help=f"{text} (needs the grader)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=_without_grader)
    else:
        from peft_grader import cli

        sub.add_parser("demo", help=GRADER_COMMANDS["demo"]).set_defaults(func=_demo)
        cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
