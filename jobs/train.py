"""Ray Job entrypoint for training.

Runs the same code as `ser-batch train`, so it can be submitted to a cluster:

    ray job submit --working-dir . -- python jobs/train.py FEATURES_DIR --out MODEL_DIR
"""

import sys

from ser_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
