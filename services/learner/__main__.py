"""``python -m services.learner``: the same as ``prefix-rft learner`` (see ``--help``)."""

from services.learner.entry import main

if __name__ == "__main__":
    main()
