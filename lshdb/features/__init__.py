"""LSH bucket features for models: vectors in, bucket ids of random projections out.

``BucketFeatures`` (numpy) turns vectors into ids at several resolutions; an index's own
tables give ids too (``Index.bucket_ids``). ``lshdb.features.torch`` holds the PyTorch
input layers that embed the ids (the optional extra ``lshdb[torch]``; imported only there).
See docs/features.md for when they help and when they do not.
"""

from __future__ import annotations

from .buckets import DEFAULT_BINS, EDGES, BucketFeatures, uniform_edges

__all__ = ["BucketFeatures", "DEFAULT_BINS", "EDGES", "uniform_edges"]
