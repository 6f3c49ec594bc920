"""Running a model on many items: what evaluation and search share, below both.

- `spans` (torch-free): the model's normalised (centre, width) moments -> seconds over the music horizon.
- `batched`: precision (bf16 autocast), encoding in batches, relevance of every (video, track) pair in chunks,
  detection of many (video, track) pairs in batches.
"""
