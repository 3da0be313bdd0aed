"""Exceptions the harness raises for users: each carries a sentence to print."""


class HarnessError(Exception):
    """A failure the user can act on; str() is the message to show."""


class ConfigError(HarnessError):
    """A hosts or guest file is wrong; the message names file, line and key."""


class MigrationError(HarnessError):
    """A migration failed; the message says which side and why."""
