"""Data on disk: labels and file discovery (:mod:`.labels`), feature sets read back for training
(:mod:`.featureset`), folders of Parquet parts written atomically (:mod:`.parts`) and the output folder of
``score`` (:mod:`.score_folder`)."""
