import sys

from bench.stores.cli import main

sys.exit(main(sys.argv[1:]))
