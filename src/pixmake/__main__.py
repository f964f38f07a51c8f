"""``python -m pixmake`` runs the command line (through the entry point's no-op fast lane)."""

from pixmake.entry import main

if __name__ == "__main__":
    main()
