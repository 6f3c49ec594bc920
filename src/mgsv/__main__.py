"""`python -m mgsv` runs the console script."""

from mgsv.cli import main

main()
