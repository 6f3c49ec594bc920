"""Imports every command module so that each registers its commands on the app."""

# One line per command module; keep alphabetical.
from mgsv.cli import (
    data,  # noqa: F401
    data_split,  # noqa: F401
    data_synthetic,  # noqa: F401
    demo,  # noqa: F401
    encoders,  # noqa: F401
    extract,  # noqa: F401
    ground,  # noqa: F401
    hub,  # noqa: F401
    library,  # noqa: F401
    library_reindex,  # noqa: F401
    models,  # noqa: F401
    render,  # noqa: F401
    reproduce,  # noqa: F401
    score,  # noqa: F401
    serve,  # noqa: F401
    train,  # noqa: F401
)
