"""The errors a user can cause (bad config, data, paths or weights): the CLI prints them without a traceback."""

from __future__ import annotations

from xkd.config_io import ConfigError
from xkd.data.manifest import ManifestError
from xkd.data.media import MediaError
from xkd.engine.checkpoint import CheckpointError
from xkd.engine.loss_terms import NonFiniteLossError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    ManifestError,
    MediaError,
    CheckpointError,
    NonFiniteLossError,
    FileNotFoundError,
    FileExistsError,
    ValueError,
    KeyError,
)
