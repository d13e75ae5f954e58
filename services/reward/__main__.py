"""``python -m services.reward``: the same as ``prefix-rft reward`` (see ``prefix-rft reward --help``)."""

import sys

from launcher.cli import app

if __name__ == "__main__":
    app(["reward", *sys.argv[1:]])
