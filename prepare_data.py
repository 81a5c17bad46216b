#!/usr/bin/env python
"""Turn public raw data into the catalog's files: `python prepare_data.py pairs --set cc3m --captions ... --media ...`.

The same as `nextgpt prepare`; the options are in nextgpt/cli/prepare.py, the code in nextgpt/dataset/prepare.py.
"""
import sys

from nextgpt.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
