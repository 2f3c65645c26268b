"""The command's exit codes: success; a failed call or a run that did not succeed; bad
usage; Ctrl-C."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
