"""``python -m services.rollout``: the same as ``prefix-rft rollout`` (see ``prefix-rft rollout --help``)."""

import sys

from launcher.cli import app

if __name__ == "__main__":
    app(["rollout", *sys.argv[1:]])
