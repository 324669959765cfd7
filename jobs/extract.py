"""Ray Job entrypoint for feature extraction.

Runs the same code as `ser-batch extract`, as the entrypoint of a Ray job; `ser-batch submit extract ARGS`
submits it (absolute paths, the project as working_dir), and so does Ray's own CLI:

    ray job submit --working-dir . -- python jobs/extract.py ARGS

Inside a Ray Job, RAY_ADDRESS is set and the job joins that cluster.
"""

import sys

from ser_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
