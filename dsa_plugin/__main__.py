import sys

from dsa_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main())
