"""One module per `dpr-hf` sub-command: `add_arguments(parser)` and `run(args)`."""
