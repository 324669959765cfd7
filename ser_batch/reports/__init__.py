"""What people read: failure summaries (:mod:`.failures`), progress bars (:mod:`.progress`), the training
report (:mod:`.training`) and the scoring report of ``ser-batch report`` (:mod:`.scoring`)."""
