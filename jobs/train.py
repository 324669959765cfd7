"""Ray Job entrypoint for training.

Runs the same code as `ser-batch train`, as the entrypoint of a Ray job; `ser-batch submit train ARGS`
submits it (absolute paths, the project as working_dir), and so does Ray's own CLI:

    ray job submit --working-dir . -- python jobs/train.py ARGS
"""

import sys

from ser_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
