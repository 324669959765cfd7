"""The one scoring path shared by ``predict``, ``evaluate`` and ``score`` (:mod:`.scoring`): audio
streams cut into windows, scored by a bundle's model set, summarised per stream."""
