"""Policy pack of the queue-workers stacks: rules in rules.py, the pack in __main__.py."""
