"""Errors a user can cause. The CLI prints them as one line and exits 2; anything else keeps its traceback."""


class UserError(Exception):
    """Bad recipe, data, plugin or model name: reported in one line, exit status 2."""

    exit_code = 2
