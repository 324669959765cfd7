"""Ray Job entrypoint for training.

Runs the same code as `ser-batch train`, as the entrypoint of a Ray job; `ser-batch submit train ARGS`
submits it (absolute paths, the project as working_dir), and so does Ray's own CLI:

    ray job submit --working-dir . -- python jobs/train.py ARGS

Paths: the job runs in a temporary copy of the project (its working_dir) that Ray deletes when
the job ends, so a relative --out is refused (`error: --out ... is relative, but this runs as
Ray job ...`, exit 2) rather than written into that copy; a relative input would be read from
the copy too. Give absolute paths; `ser-batch submit` makes every path absolute before submitting.
"""

import sys

from ser_batch.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
