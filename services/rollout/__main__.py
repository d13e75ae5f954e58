"""``python -m services.rollout``: the same as ``prefix-rft rollout`` (see ``--help``)."""

from services.rollout.entry import main

if __name__ == "__main__":
    main()
