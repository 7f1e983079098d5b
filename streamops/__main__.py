"""`python -m streamops`: the CLI; `install` works before the virtual environment exists."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "install":
    # The installer needs only the standard library, so it runs on a fresh machine's Python.
    from streamops.installer import main

    sys.exit(main(sys.argv[2:]))

from streamops.cli import run

run()
