"""Operating detbot: the ``detbot`` command and its tools (``run``, ``doctor``, ``bench``).

Nothing in ``bot/``, ``detector/`` or ``jobs/`` imports this package: it sits on top of them.
"""
