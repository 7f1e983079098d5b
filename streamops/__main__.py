"""`python -m streamops`: the CLI; `install` works before the virtual environment exists."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "install":
    # The installer needs only the standard library, so it runs on a fresh machine's Python.
    from streamops.installer import main

    sys.exit(main(sys.argv[2:]))
if len(sys.argv) > 1 and sys.argv[1] == "compose-secrets":
    # So does compose's secrets generator: Docker and Python are enough for `make compose-up`.
    from streamops.compose_secrets import main as compose_secrets

    sys.exit(compose_secrets(sys.argv[2:]))

from streamops.cli import run

run()
