"""The ``flowbot`` command: ``main`` builds the parser and runs a command; each other module adds
one group of subcommands (``hooks``, ``jobs``).

May import: every engine layer. Never ``bot`` (the Slack app plugs its commands in as a plugin).
"""
