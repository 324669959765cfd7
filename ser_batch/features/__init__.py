"""Features of decoded signals: signal checks (:mod:`.checks`), cached filterbanks (:mod:`.filterbanks`),
feature names (:mod:`.names`), the ``classic`` (:mod:`.classic`), ``fast`` (:mod:`.fast`) and ``rich``
(:mod:`.rich`) frame recipes, YIN pitch (:mod:`.pitch`), sliding windows streamed over long signals
(:mod:`.windows`), the opt-in band-SNR speech detector of their speech ratio (:mod:`.speech`), and the
recipe registry with the one ``file_features`` entry point (:mod:`.recipes`). Pure numpy/scipy, no Ray;
only ``classic`` imports librosa (lazily)."""
