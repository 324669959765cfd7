"""Ray Job entrypoint for feature extraction.

Runs the same code as `ser-batch extract`, so it can be submitted to a cluster:

    ray job submit --working-dir . -- python jobs/extract.py INPUT_DIR --out OUT

Inside a Ray Job, RAY_ADDRESS is set and the job joins that cluster.
"""

import sys

from ser_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
