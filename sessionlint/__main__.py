import sys

from sessionlint.cli import main

sys.exit(main())
