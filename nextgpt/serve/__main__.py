"""`python -m nextgpt.serve --model CKPT ...`: the same as `nextgpt serve`."""
import sys

from nextgpt.cli.serve import main

sys.exit(main())
