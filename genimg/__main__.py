import sys

from genimg.cli import main

if __name__ == "__main__":  # guard: catalog workers are spawned and re-import this module
    sys.exit(main())
