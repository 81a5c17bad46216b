"""`python -m nextgpt COMMAND ...`: the same as the `nextgpt` console command."""
import sys

from nextgpt.cli import main

sys.exit(main())
