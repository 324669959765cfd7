"""Models: the two networks as estimators (:mod:`.estimators`), their numpy array exports
(:mod:`.networks`), per-group normalisation (:mod:`.normalize`), named model sets and the rule that picks
one (:mod:`.model_sets`), checksummed bundles (:mod:`.bundle`) and classification metrics (:mod:`.metrics`)."""
