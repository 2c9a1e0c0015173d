"""The exceptions of terarag: one root, with user errors (bad input, a missing or corrupt
datastore, an unusable model or server) as one branch.

``TeraragError`` is the root of every exception the packages define. ``UserError`` is the branch
the command line prints as one line: the user can fix it. It is also a ``ValueError``, as the bad
input it reports used to be. Anything else that escapes a command is a bug and is printed with its
traceback.
"""


class TeraragError(Exception):
    """The root of every exception terarag defines."""


class UserError(TeraragError, ValueError):
    """Bad input or an unusable resource the user can fix; the message says what and where, in one line."""


class DatastoreError(UserError):
    """A datastore cannot be read or written; the message names the path at fault."""


class IncompleteBuildError(DatastoreError):
    """The directory holds a build that never finished (no committed manifest)."""
