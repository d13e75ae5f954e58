"""``python -m services.reward``: the same as ``prefix-rft reward`` (see ``--help``)."""

from services.reward.entry import main

if __name__ == "__main__":
    main()
