"""``python -m pixmake`` runs the command line."""

from pixmake.cli import main

if __name__ == "__main__":
    main()
