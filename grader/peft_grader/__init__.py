"""The instructor's house: the grading engine that drives the nbgrader course in grader/.

One module per concern (ARCHITECTURE.md):
- nbcourse: where the course's files are, course folders, nbgrader as a child process;
- release: the learner notebooks generated from the masters;
- intake: a class's folder or zip, each file checked before grading;
- pipeline: one submission: scratch course, sandboxed kernel, nbgrader autograde, verdicts read back;
- preprocessors: order repair and tamper handling, nbgrader preprocessors in grader/nbgrader_config.py;
- sandbox, sandbox_execute, kernel_guard, tamper: the kernel's isolation and its guards;
- warm: kernels (and the outside checks) forked from a zygote that imported the libraries once;
- verify: the outside verification of on-disk and evidence checks, in a fresh process;
- scores: what a submission scored, the gradebook, results saved as they arrive;
- grading: a class graded with workers, and a learner's self-check;
- report, feedback: the summary table and the feedback HTML's filter;
- catalogue, adversarial: the mistake and adversarial catalogues that prove the checks;
- execute, demo: labs run as a learner runs them, and `make demo`;
- cli: `labutils release`, `grade` and `check`, which labutils delegates to.
It may import labutils; labutils never imports it.
"""
