"""One module per CLI command: parse options, call sage.lib, render."""
