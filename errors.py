"""The errors a run ends with: each is printed as one line (cli.main_guard), never a traceback."""


class UserError(ValueError):
    """An error the user can fix (input, files, data): printed as one line, exit code 2."""


class ConfigError(UserError):
    """A user error in the configuration: one line, names key, value and what is valid."""


class DataError(UserError):
    """A data problem (missing archive, corrupt file, bad length): one line naming the file."""


class RunFailure(RuntimeError):
    """The run itself failed (a non-finite loss, out of memory): printed as one line, exit code 1."""
