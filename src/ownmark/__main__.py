"""``python -m ownmark``: the same command as the ``ownmark`` console script."""

from ownmark.cli import main

if __name__ == "__main__":
    main()
