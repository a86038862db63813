"""Exit codes of every ``python -m workload`` mode (producer, consumer, monitor, admin modes)."""

EXIT_OK = 0  # done; the consumer and the monitor: stopped by SIGTERM/SIGINT or their own limits
EXIT_ERROR = 1  # unexpected failure (a bug, or a handler that could not be loaded at run time)
EXIT_USAGE = 2  # bad option, environment value or handler: refused before any network call
EXIT_QUEUE = 3  # the queue service refused (queue missing, credentials refused, unreachable)
