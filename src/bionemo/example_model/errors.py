"""The one exception type for mistakes a user can fix (bad data, checkpoint, flag): the CLI prints it as one line."""


class ExampleModelError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""
