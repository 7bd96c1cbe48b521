"""``python -m plantwatch.daemon.lab.bench``"""
import sys

from plantwatch.daemon.lab.bench import main

if __name__ == "__main__":
    sys.exit(main())
