"""`python -m nextgpt.webui --model CKPT ...`: the same as `nextgpt webui`."""
import sys

from nextgpt.cli.webui import main

sys.exit(main())
