"""``python -m cli ARGS``: the command line without the installed ``crmsync`` script
(e.g. ``python -X importtime -m cli run ...`` to see what a run imports)."""

from cli import main

main(prog_name="crmsync")
