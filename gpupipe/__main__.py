"""``python -m gpupipe`` runs the CLI."""

from .cli import main

main()
