"""The one error type our code raises for problems a user can fix; the CLI prints it without a traceback."""


class CourseError(Exception):
    """A problem with the learner's environment or input, with a message that names the fix."""
