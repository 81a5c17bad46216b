"""A gradio chat page for one loaded checkpoint: upload images, sounds and clips, get streamed text and inline
images, audio players and videos back. `build_demo(generator)` makes the page (`app`); the command line is
`nextgpt webui` (`python -m nextgpt.webui`)."""
from .app import build_demo, launch

__all__ = ["build_demo", "launch"]
