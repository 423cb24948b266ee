import sys

from dsa_plugin.cli import main

sys.exit(main())
