"""The instructor's commands (`labutils release`, `grade`, `check`), which `labutils.cli` delegates to."""

from __future__ import annotations

import argparse
from pathlib import Path

from peft_grader.grading import grade, self_check
from peft_grader.nbcourse import NOTEBOOKS, REPO
from peft_grader.release import release
from peft_grader.report import REPORT, summary_table


def release_cmd(args: argparse.Namespace) -> int:
    from peft_grader.course import point_links, repository, set_repository

    if args.bundle:  # the class repository's own setting; the course's stays as it is
        from peft_grader.bundle import bundle

        folder = bundle(Path(args.bundle), args.repository)
        print(
            f"learner bundle in {folder}: publish it as the class repository ({args.repository or repository()})"
        )
        return 0
    if args.repository:
        set_repository(args.repository)
        print(f"repository setting (pyproject.toml [tool.peft-course]): {args.repository}")
    for path in release(Path(args.out), args.labs or None):
        print(f"released {path}")
    workshop = REPO / "WORKSHOP.md"
    if workshop.exists():
        workshop.write_text(point_links(workshop.read_text(), repository()))
        print(f"links in {workshop} point at {repository()}")
    return 0


def grade_cmd(args: argparse.Namespace) -> int:
    results = grade(
        Path(args.submissions),
        Path(args.out),
        args.labs or None,
        timeout=args.timeout,
        workers=args.workers,
        budget=args.budget,
        force=args.force,
        sandbox=not args.no_sandbox,
        cluster=args.cluster or args.scheduler,
        kernels="cold" if args.cold_kernels else "auto",
    )
    print(summary_table(results))
    out = Path(args.out)
    print(f"\nfeedback: {out / 'feedback'}\ngrades:   {out / 'grades.csv'}\nreport:   {out / REPORT}")
    return 0


def mutate_cmd(args: argparse.Namespace) -> int:
    from peft_grader import mutate

    kinds = (args.kind,) if args.kind else (mutate.PEFT, mutate.GENERIC)
    outcomes = mutate.run(args.labs, Path(args.out), kinds, workers=args.workers)
    print(mutate.report(outcomes))
    print(f"report: {Path(args.out) / 'mutation.md'}")
    return 0


def hub_cmd(args: argparse.Namespace) -> int:
    from peft_grader import hub

    root = Path(args.dir)
    if args.action == "start":
        return hub.start(
            root, args.students.split(","), args.password, args.port, args.ip, demo=args.demo, lti=args.lti
        )
    if args.action in ("add", "password"):
        issued = (hub.add if args.action == "add" else hub.password)(root, args.labs)
        for name, password in issued.items():
            print(f"{name}: password {password}")
        print(f"(also in {root / 'passwords.csv'}, root only)")
    elif args.action == "remove":
        for name in hub.remove(root, args.labs):
            print(f"removed {name}: they can no longer log in; their home, submissions and grades are kept")
    elif args.action == "release":
        for lab in hub.release(root, args.labs):
            print(f"released {lab} to the exchange: students fetch it in JupyterLab's Assignments tab")
    elif args.action == "collect":
        for lab, students in hub.collect(root, args.labs).items():
            print(f"collected {lab}: {len(students)} submissions ({', '.join(students) or 'none yet'})")
        print(f"next: labutils grade {root / 'course'} --out {root / 'grading'}")
    else:
        for lab, students in hub.return_feedback(root, args.labs, args.grading).items():
            print(
                f"feedback on {lab} released for {', '.join(students) or 'nobody'}: students fetch it "
                "in the Assignments tab (Fetch Feedback)"
            )
    return 0


def check_cmd(args: argparse.Namespace) -> int:
    return self_check(Path(args.notebook), timeout=args.timeout)


def add_commands(sub) -> None:
    p = sub.add_parser("release", help="regenerate the learner notebooks from grader/source with nbgrader")
    p.add_argument("labs", nargs="*", help="labs to release (default: all)")
    p.add_argument("--out", default=str(NOTEBOOKS), help="where to write the release (default: notebooks/)")
    p.add_argument(
        "--repository",
        metavar="OWNER/NAME",
        help="the GitHub repository the Colab badges and set-up cells point at (saved in pyproject.toml; "
        "with --bundle, the class repository, saved in the bundle only)",
    )
    p.add_argument(
        "--bundle",
        metavar="DIR",
        help="write a course for learners into DIR: notebooks, labutils, data; no solutions, no hidden checks",
    )
    p.set_defaults(func=release_cmd)

    p = sub.add_parser("grade", help="autograde a class: a folder of <student>/<lab>.ipynb, or a zip")
    p.add_argument("submissions")
    p.add_argument("--out", default="grading", help="course folder for gradebook, feedback, grades.csv")
    p.add_argument("--labs", nargs="*", help="labs to grade (default: every lab submitted)")
    p.add_argument(
        "--timeout", type=int, help="per-cell timeout in seconds (default: grader/nbgrader_config.py)"
    )
    p.add_argument("--workers", type=int, help="submissions graded at once (default: the machine's cores)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--cluster", metavar="local:N", help="grade on a Dask LocalCluster of N single-threaded workers"
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="grade on an existing Dask cluster (e.g. tcp://host:8786); its workers must see this folder",
    )
    p.add_argument("--budget", type=float, default=900, help="wall-clock seconds per notebook (default: 900)")
    p.add_argument("--force", action="store_true", help="regrade submissions already graded and unchanged")
    p.add_argument(
        "--no-sandbox", action="store_true", help="run kernels without bubblewrap/unshare (trusted work only)"
    )
    p.add_argument(
        "--cold-kernels",
        action="store_true",
        help="start every kernel afresh under bubblewrap instead of forking it from a process that has "
        "imported the libraries once (slower; the same isolation)",
    )
    p.set_defaults(func=grade_cmd)

    p = sub.add_parser("mutate", help="mutation testing: grade mutants of labs' reference solutions")
    p.add_argument("labs", nargs="+", help="labs whose solution cells to mutate")
    p.add_argument("--out", default="mutation", help="folder for the mutants, their grading and the report")
    p.add_argument("--kind", choices=["peft", "generic"], help="only PEFT-aware or only generic operators")
    p.add_argument("--workers", type=int, help="mutants graded at once (default: the machine's cores)")
    p.set_defaults(func=mutate_cmd)

    p = sub.add_parser(
        "hub", help="a class on JupyterHub: start it, add or remove students, release labs, collect, feedback"
    )
    p.add_argument("action", choices=["start", "add", "remove", "password", "release", "collect", "feedback"])
    p.add_argument(
        "labs",
        nargs="*",
        metavar="NAME",
        help="labs to release, collect or return feedback on; students to add, remove or give a new password",
    )
    p.add_argument("--dir", default="hub", help="the hub's folder (default: hub/)")
    p.add_argument("--students", default="ada,bo", help="start: the class list, comma-separated")
    p.add_argument(
        "--demo",
        action="store_true",
        help="start: one Unix account and one shared password for everyone "
        "(no isolation: a look on a laptop, never a class)",
    )
    p.add_argument("--password", help="start --demo: the shared password (default: generated, then kept)")
    p.add_argument(
        "--lti",
        type=Path,
        metavar="FILE",
        help="start: students launch from the LMS with LTI 1.3 instead of passwords; FILE is JSON with issuer, "
        "client_id, authorize_url, jwks_endpoint, public_url (grader/README.md)",
    )
    p.add_argument("--port", type=int, default=8000, help="start: the hub's port (default: 8000)")
    p.add_argument("--ip", default="127.0.0.1", help="start: the address to listen on (0.0.0.0 for a LAN)")
    p.add_argument("--grading", help="feedback: the folder labutils grade wrote (default: HUB_DIR/grading)")
    p.set_defaults(func=hub_cmd)

    p = sub.add_parser("check", help="self-check a lab notebook against the hidden checks")
    p.add_argument("notebook")
    p.add_argument("--timeout", type=int)
    p.set_defaults(func=check_cmd)
