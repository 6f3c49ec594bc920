"""`mgsv extract`: media files -> a feature store, resumable and skipping content it already holds.

- `plan`: what one modality's run has to do (ids, collisions, what is stored, copies of known content).
- `hashing`: the content index (which stored id holds which file content).
- `pipeline`: the serial engine and the entry point `extract_features`.
- `ray_engine`: the same work spread over a Ray cluster (`--engine ray`).

Finding, hashing and decoding files is shared with the music library (`mgsv.files`, `mgsv.media`). Importing this
package does not import torch or the encoders.
"""

from mgsv.extract.hashing import ContentIndex
from mgsv.extract.pipeline import EncoderOptions, ExtractReport, extract_features

__all__ = ["ContentIndex", "EncoderOptions", "ExtractReport", "extract_features"]
