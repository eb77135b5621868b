"""Running a detector over a data set and scoring what it predicts.

The forward pass in batches (:mod:`.inference`), map smoothing (:mod:`.smoothing`), the class
collector and the four-metric row (:mod:`.evaluate`), the stored predictions
(:mod:`.predictions`) and predicting loose image files (:mod:`.predict`).
"""
