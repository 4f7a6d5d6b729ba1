"""The one error type users see for bad input: a one-line message naming the file and the field.

Every invalid config, sweep, study name or profile ends as a `ConfigError` whose message reads
``<source>: <field>: <what is allowed> (got <value>)``, e.g.
``configs/x.toml: world.exit_prob: must be between 0 and 1 (got 1.5)``. The CLI prints it after
``error: `` and exits with code 2, without a traceback.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Invalid user input, described in one line.

    field:  dotted path of the offending field ("world.exit_prob", "sweep.seed", "profile");
            empty when the problem is the whole file (missing, not TOML).
    detail: what is allowed and what was given.
    source: where the input came from (a file path, "study compounding", "--executor").
    """

    def __init__(self, field: str, detail: str, source: str | None = None) -> None:
        self.field = field
        self.detail = detail
        self.source = source
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [p for p in (self.source, self.field, self.detail) if p]
        return ": ".join(" ".join(str(p).split()) for p in parts)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:
        # Exceptions are pickled through their args; ours has three, so say so explicitly.
        return (type(self), (self.field, self.detail, self.source))

    def with_source(self, source: str) -> ConfigError:
        """The same error attributed to `source` (a file path) unless it already names one."""
        return ConfigError(self.field, self.detail, self.source or source)
