"""Registers the HIL plugin for runs from a checkout (``pytest hil_tests``).

``micropen hil`` loads the same module with ``-p micropen.hil_tests.plugin``; pytest loads a
plugin once whichever way it is named first.
"""

pytest_plugins = ["micropen.hil_tests.plugin"]
