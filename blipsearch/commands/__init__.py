"""One module per group of CLI commands; blipsearch/cli.py registers them."""
