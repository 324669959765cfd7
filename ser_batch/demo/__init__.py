"""``make demo``: the end-to-end demo (:mod:`.run`) and the synthetic calls it scores (:mod:`.calls`)."""
