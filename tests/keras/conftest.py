"""Collection rules for the Keras tests.

Keras picks its backend once, when it is first imported, so ``backend_cases.py``
runs only in the subprocesses that ``test_backends.py`` starts with
``KERAS_BACKEND`` and ``OPTSTRAT_KERAS_CASES=1`` set. In any other run it is not
collected, not even for doctests, so the parent process does not import it.
"""

import os

collect_ignore = [] if os.environ.get("OPTSTRAT_KERAS_CASES") == "1" else ["backend_cases.py"]
