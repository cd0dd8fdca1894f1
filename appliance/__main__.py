"""`python -m appliance` is the `facegate` command."""

import sys

from appliance.cli import main

sys.exit(main())
