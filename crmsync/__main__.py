"""``python -m crmsync ARGS``: the command line without the installed ``crmsync`` script
(e.g. ``python -X importtime -m crmsync run ...`` to see what a run imports)."""

from crmsync.cli import main

main(prog_name="crmsync")
