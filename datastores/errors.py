"""Errors raised for datastores that are missing, incomplete, corrupt or misused."""


class DatastoreError(Exception):
    """A datastore cannot be read or written; the message names the path at fault."""


class IncompleteBuildError(DatastoreError):
    """The directory holds a build that never finished (no committed manifest)."""
