"""Audio in: decoding files to mono float32 at a chosen rate (:mod:`.decode`), and telephone codecs
and augmentations of decoded signals (:mod:`.telephony`). Nothing here knows about features or models."""
