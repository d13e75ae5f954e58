"""``python -m services.learner``: the same as ``prefix-rft learner`` (see ``prefix-rft learner --help``)."""

import sys

from launcher.cli import app

if __name__ == "__main__":
    app(["learner", *sys.argv[1:]])
