import sys
from pathlib import Path

# fixture_support lives next to the tests; make it importable under xdist too.
sys.path.insert(0, str(Path(__file__).parent))
