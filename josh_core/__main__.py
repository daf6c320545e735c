"""`python -m josh_core ...` is the `josh` command (the app launches rollouts this way)."""

from josh_core.cli import main

# Guarded because backends that start worker processes by spawn (vLLM's engine core) import the
# main module again in the child.
if __name__ == "__main__":
    main()
