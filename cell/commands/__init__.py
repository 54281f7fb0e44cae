"""The ``cell`` subcommands, one module each; each defines ``command``."""
