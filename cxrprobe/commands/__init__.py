"""One module per command, between the report layer and the CLI: each validates its typed
options, opens what it reads, runs the work of the layers below, builds config.json and
publishes its output whole (a temporary name, then a rename)."""
