"""From media files to features: finding files, hashing their content, decoding and encoding them.

- `discover`: files and folders -> the video or music files to work on.
- `hashing`: content hashes and the content index (which stored id holds which file content).
- `media`: decode one file for an encoder, with the checks that refuse unusable files; decode-ahead prefetching.
- `pipeline`: `mgsv extract`, files -> a feature store, resumable and skipping known content.

`mgsv.search.library` uses `media` and `hashing` for the music library. Importing this package does not import
torch or the encoders.
"""

from mgsv.extract.discover import find_media
from mgsv.extract.hashing import ContentIndex, content_hash
from mgsv.extract.pipeline import EncoderOptions, ExtractReport, extract_features

__all__ = ["ContentIndex", "EncoderOptions", "ExtractReport", "content_hash", "extract_features", "find_media"]
