"""The jobs, one module each: ``extract`` (:mod:`.extract`), ``train`` (:mod:`.train`, with the model
sets it fits in :mod:`.train_sets`), ``evaluate`` (:mod:`.evaluate`) and ``score`` (:mod:`.score`, with its
planning in :mod:`.score_plan` and tables in :mod:`.score_tables`). They import every layer below; nothing
below imports them. (The top-level ``jobs/`` folder holds the thin ``ray job submit`` entrypoints that run
these through the command line.)"""
