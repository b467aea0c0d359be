"""One module per ``edgeyolo`` subcommand, each with ``register(subparsers)``.

A command module sets ``func`` on its parser; ``func(args)`` returns the exit code. Heavy
imports stay inside ``func`` so ``edgeyolo --help`` is instant.
"""
