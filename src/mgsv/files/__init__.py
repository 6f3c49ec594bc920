"""Finding, hashing and reading input files: what every batch command (extract, library add, ground) shares.

- `discover`: files and folders named on a command line -> the media files to work on, and the inputs that
  cannot be used (reported, never raised, so that a batch goes on).
- `hashing`: content hashes (a renamed or copied file is the same content).
- `problems`: per-file problems collected by a batch and reported at its end.
- `prefetch`: reading the next file in a thread while the caller encodes the current one.
"""
