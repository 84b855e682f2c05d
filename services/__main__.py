"""``python -m services`` is the ``usagehub`` admin command."""

import sys

from services.cli import main

sys.exit(main())
