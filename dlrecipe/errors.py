"""Errors a user can act on: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (recipe, option, data file): shown as one line, no traceback."""


class RecipeError(UserError):
    """A recipe key, value or combination that is not allowed."""


class DataError(UserError):
    """A data source that cannot be read or does not fit the recipe."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the run folder was brought up to date: the message says what was kept and how to go on."""
