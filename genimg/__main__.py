import sys

from genimg.cli import main

sys.exit(main())
