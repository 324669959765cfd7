"""Ray Job entrypoint for batch scoring.

Runs the same code as `ser-batch score`, as the entrypoint of a Ray job; `ser-batch submit score ARGS`
submits it (absolute paths, the project as working_dir), and so does Ray's own CLI:

    ray job submit --working-dir . -- python jobs/score.py ARGS

Inside a Ray Job, RAY_ADDRESS is set and the job joins that cluster; INPUT and OUT must be
on storage every node sees at the same path.
"""

import sys

from ser_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
