"""``python -m thyrofast.cli``: the ``thyrofast`` command."""
import sys

from thyrofast.cli import main

sys.exit(main())
