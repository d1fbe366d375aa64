"""get_map.py: not implemented yet (see the open issues)."""
import sys

if __name__ == "__main__":
    sys.exit("get_map.py: not implemented yet")
