"""``python -m wnet_zoo.cli``: the ``wnet-zoo`` command in this interpreter."""

import sys

from wnet_zoo.cli.main import main

sys.exit(main())
