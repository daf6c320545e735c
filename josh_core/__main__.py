"""`python -m josh_core ...` is the `josh` command (the app launches rollouts this way)."""

from josh_core.cli import main

main()
