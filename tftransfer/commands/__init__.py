"""The command line's commands beyond the demos: train, evaluate, predict, export.

`tftransfer.cli` parses the arguments and imports the command's module when it
runs; each module here does the work with the library's public functions.
"""
