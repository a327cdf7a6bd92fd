"""``python -m banditroute`` runs the command line."""

from banditroute.cli import main

main()
