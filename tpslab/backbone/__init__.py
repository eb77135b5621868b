"""Frozen CLIP through open_clip.

Loading the weights (:mod:`.loading`), the backbone surface every method reads (:mod:`.core`)
and the on-disk cache of its frozen features (:mod:`.cache`).
"""
