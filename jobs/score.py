"""Ray Job entrypoint for batch scoring.

Runs the same code as `ser-batch score`, so it can be submitted to a cluster:

    ray job submit --working-dir . -- python jobs/score.py INPUT --out OUT

Inside a Ray Job, RAY_ADDRESS is set and the job joins that cluster; INPUT and OUT must be
on storage every node sees at the same path.
"""

import sys

from ser_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
