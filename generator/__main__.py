"""`python -m generator` runs the gen command line."""

from generator.entry import main

main()
