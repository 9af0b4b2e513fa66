import sys
from pathlib import Path

# Tests import the tree they live in (same code install.sh puts in the venv).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
