"""`ConfigError`: a bad config value, file or path, reported in one line naming the field.

Raised before anything is compiled. The CLI prints it without a traceback; anything else that
goes wrong keeps its full traceback.
"""


class ConfigError(ValueError):
  """A user-facing configuration error (subclass of ValueError)."""
